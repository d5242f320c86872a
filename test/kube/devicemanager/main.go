// Command kubelet-devicemanager is a test harness that runs the kubelet's own device manager
// (k8s.io/kubernetes/pkg/kubelet/cm/devicemanager) outside a kubelet. Device plugins register with it on
// <root>/device-plugins/kubelet.sock exactly as with a real kubelet; a test drives it over a small
// HTTP/JSON API (admit a pod, list resources, restart the "kubelet") and can read allocations back
// through the kubelet PodResources v1 API on <root>/pod-resources/kubelet.sock.
//
// Test-only; the protocol is documented in test/kube/README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
)

func main() {
	fs := flag.NewFlagSet("kubelet-devicemanager", flag.ExitOnError)
	root := fs.String("root", "", "state directory (required); plays the role of /var/lib/kubelet")
	pluginDir := fs.String("device-plugin-dir", "", "device plugin socket directory (default <root>/device-plugins)")
	podResources := fs.String("pod-resources-socket", "", "PodResources v1 socket (default <root>/pod-resources/kubelet.sock; 'none' disables)")
	listen := fs.String("listen", "127.0.0.1:0", "address of the HTTP/JSON control API")
	kubeconfig := fs.String("kubeconfig", "", "optional: kubeconfig used to fetch pods admitted by name (from_api)")
	nodeName := fs.String("node-name", "", "optional: node this kubelet plays; pods fetched from the API must be bound to it")
	klogFlags := flag.NewFlagSet("klog", flag.ExitOnError)
	klog.InitFlags(klogFlags)
	fs.Var(klogFlagValue{klogFlags.Lookup("v")}, "v", "log verbosity of the device manager (klog)")
	_ = fs.Parse(os.Args[1:])
	if *root == "" {
		fmt.Fprintln(os.Stderr, "kubelet-devicemanager: --root is required")
		os.Exit(2)
	}
	if *pluginDir == "" {
		*pluginDir = filepath.Join(*root, "device-plugins")
	}
	if *podResources == "" {
		*podResources = filepath.Join(*root, "pod-resources", "kubelet.sock")
	}
	if err := run(*root, *pluginDir, *podResources, *listen, *kubeconfig, *nodeName); err != nil {
		fmt.Fprintf(os.Stderr, "kubelet-devicemanager: %v\n", err)
		os.Exit(1)
	}
}

type klogFlagValue struct{ f *flag.Flag }

func (v klogFlagValue) String() string {
	if v.f == nil {
		return ""
	}
	return v.f.Value.String()
}
func (v klogFlagValue) Set(s string) error { return v.f.Value.Set(s) }

func run(root, pluginDir, podResourcesSocket, listen, kubeconfig, nodeName string) error {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	logger := klog.Background()

	if err := os.MkdirAll(root, 0o750); err != nil {
		return err
	}
	k := newKubelet(pluginDir, logger)
	if err := k.start(); err != nil {
		return err
	}
	defer func() { _ = k.stop() }()

	if podResourcesSocket != "none" {
		srv, err := servePodResources(ctx, podResourcesSocket, k)
		if err != nil {
			return fmt.Errorf("pod resources API: %w", err)
		}
		defer srv.Stop()
	}

	api := &api{k: k, nodeName: nodeName}
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return fmt.Errorf("kubeconfig: %w", err)
		}
		api.client, err = kubernetes.NewForConfig(cfg)
		if err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	url := "http://" + ln.Addr().String()
	urlFile := filepath.Join(root, "harness.url")
	if err := os.WriteFile(urlFile, []byte(url+"\n"), 0o644); err != nil {
		return err
	}
	defer os.Remove(urlFile)
	hs := &http.Server{Handler: api.routes(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	// The one line on stdout: tests wait for it, then talk to the URL.
	fmt.Printf("ready %s\n", url)

	<-ctx.Done()
	shutdown, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	return hs.Shutdown(shutdown)
}

type api struct {
	k        *kubelet
	client   kubernetes.Interface
	nodeName string
}

func (a *api) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if a.k.manager() == nil {
			writeError(w, http.StatusServiceUnavailable, errors.New("device manager is not running"))
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /resources", func(w http.ResponseWriter, r *http.Request) {
		reply, err := a.k.resources()
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, err)
			return
		}
		writeJSON(w, http.StatusOK, reply)
	})
	mux.HandleFunc("GET /pods", func(w http.ResponseWriter, r *http.Request) {
		pods, err := a.k.podAllocations(r.Context())
		if err != nil {
			writeError(w, http.StatusServiceUnavailable, err)
			return
		}
		if pods == nil {
			pods = []*podAllocation{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"pods": pods})
	})
	mux.HandleFunc("POST /pods", a.admit)
	mux.HandleFunc("DELETE /pods/{namespace}/{name}", func(w http.ResponseWriter, r *http.Request) {
		err := a.k.remove(r.PathValue("namespace"), r.PathValue("name"))
		var nf *notFoundError
		switch {
		case errors.As(err, &nf):
			writeError(w, http.StatusNotFound, err)
		case err != nil:
			writeError(w, http.StatusInternalServerError, err)
		default:
			writeJSON(w, http.StatusOK, map[string]string{"status": "removed"})
		}
	})
	mux.HandleFunc("POST /restart", func(w http.ResponseWriter, r *http.Request) {
		if err := a.k.restart(); err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		reply, err := a.k.resources()
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, http.StatusOK, reply)
	})
	return mux
}

func (a *api) admit(w http.ResponseWriter, r *http.Request) {
	var req admitRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("request body: %w", err))
		return
	}
	pod, status, err := req.toPod(r.Context(), a.client, a.nodeName)
	if err != nil {
		writeError(w, status, err)
		return
	}
	result, err := a.k.admit(r.Context(), pod)
	var conflict *conflictError
	switch {
	case errors.As(err, &conflict):
		writeError(w, http.StatusConflict, err)
	case err != nil:
		// The kubelet would reject the pod with UnexpectedAdmissionError; the caller sees why.
		writeError(w, http.StatusUnprocessableEntity, err)
	default:
		writeJSON(w, http.StatusOK, result)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]string{"error": err.Error()})
}
