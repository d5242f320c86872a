// Command kubelet-dramanager is a test harness that runs the kubelet's own DRA manager
// (k8s.io/kubernetes/pkg/kubelet/cm/dra) and plugin manager (k8s.io/kubernetes/pkg/kubelet/pluginmanager)
// outside a kubelet. DRA drivers register on <root>/plugins_registry exactly as with a real kubelet; a
// test drives it over a small HTTP/JSON API: admit a pod bound to this node (the manager reads its
// ResourceClaims from the API server and calls the driver's NodePrepareResources), read back the CDI
// devices each container would get (and their edits, resolved from the CDI spec directory as a runtime
// would), delete the pod (NodeUnprepareResources) and restart the "kubelet".
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
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/kubernetes/pkg/kubelet/cm/dra"
	draplugin "k8s.io/kubernetes/pkg/kubelet/cm/dra/plugin"
	"k8s.io/kubernetes/pkg/kubelet/config"
	"k8s.io/kubernetes/pkg/kubelet/pluginmanager"
	pluginwatcherapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

func main() {
	fs := flag.NewFlagSet("kubelet-dramanager", flag.ExitOnError)
	root := fs.String("root", "", "state directory (required); plays the role of /var/lib/kubelet")
	cdiDir := fs.String("cdi-dir", "", "CDI spec directory the runtime would read (default <root>/cdi)")
	listen := fs.String("listen", "127.0.0.1:0", "address of the HTTP/JSON control API")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig (required): claims and pods are read from the API server")
	nodeName := fs.String("node-name", "", "node this kubelet plays (required); admitted pods must be bound to it")
	klogFlags := flag.NewFlagSet("klog", flag.ExitOnError)
	klog.InitFlags(klogFlags)
	fs.Func("v", "log verbosity (klog)", func(s string) error { return klogFlags.Set("v", s) })
	_ = fs.Parse(os.Args[1:])
	if *root == "" || *kubeconfig == "" || *nodeName == "" {
		fmt.Fprintln(os.Stderr, "kubelet-dramanager: --root, --kubeconfig and --node-name are required")
		os.Exit(2)
	}
	if *cdiDir == "" {
		*cdiDir = filepath.Join(*root, "cdi")
	}
	if err := run(*root, *cdiDir, *listen, *kubeconfig, *nodeName); err != nil {
		fmt.Fprintf(os.Stderr, "kubelet-dramanager: %v\n", err)
		os.Exit(1)
	}
}

// kubelet is the DRA manager plus the plugin watcher feeding it, restartable on the same directory.
type kubelet struct {
	root, nodeName string
	client         kubernetes.Interface

	mu         sync.Mutex
	manager    *dra.Manager
	cancel     context.CancelFunc
	stopCh     chan struct{}
	generation int
	pods       map[string]*v1.Pod // "ns/name" → admitted pod
}

func (k *kubelet) start() error {
	ctx, cancel := context.WithCancel(context.Background())
	m, err := dra.NewManager(klog.Background(), k.client, filepath.Join(k.root, "dra-state"))
	if err != nil {
		cancel()
		return err
	}
	active := func() []*v1.Pod {
		k.mu.Lock()
		defer k.mu.Unlock()
		out := make([]*v1.Pod, 0, len(k.pods))
		for _, p := range k.pods {
			out = append(out, p)
		}
		return out
	}
	getNode := func(ctx context.Context) (*v1.Node, error) {
		return k.client.CoreV1().Nodes().Get(ctx, k.nodeName, metav1.GetOptions{})
	}
	ready := config.NewSourcesReady(func(sets.Set[string]) bool { return true })
	if err := m.Start(ctx, active, getNode, ready); err != nil {
		cancel()
		return err
	}
	registry := filepath.Join(k.root, "plugins_registry")
	if err := os.MkdirAll(registry, 0o750); err != nil {
		cancel()
		return err
	}
	pm := pluginmanager.NewPluginManager(registry, record.NewFakeRecorder(100))
	pm.AddHandler(pluginwatcherapi.DRAPlugin, m.GetWatcherHandler())
	stopCh := make(chan struct{})
	go pm.Run(ctx, ready, stopCh)
	k.manager, k.cancel, k.stopCh = m, cancel, stopCh
	k.generation++
	return nil
}

func (k *kubelet) stop() {
	if k.cancel != nil {
		close(k.stopCh)
		k.cancel()
		k.cancel = nil
		k.manager = nil
	}
}

// registered: a plugin of this driver is registered and connected.
func (k *kubelet) registered(driver string) bool {
	k.mu.Lock()
	m := k.manager
	k.mu.Unlock()
	if m == nil {
		return false
	}
	pm, ok := m.GetWatcherHandler().(*draplugin.DRAPluginManager)
	if !ok {
		return false
	}
	_, err := pm.GetPlugin(driver)
	return err == nil
}

type cdiEdits struct {
	Env    []string         `json:"env,omitempty"`
	Mounts []map[string]any `json:"mounts,omitempty"`
}

type containerResult struct {
	Name       string              `json:"name"`
	CDIDevices []string            `json:"cdi_devices"`
	Edits      map[string]cdiEdits `json:"edits"` // per CDI device, as found in the CDI spec directory
}

type admitResult struct {
	Namespace  string            `json:"namespace"`
	Name       string            `json:"name"`
	UID        string            `json:"uid"`
	Containers []containerResult `json:"containers"`
}

// resolveCDI finds a CDI device "vendor/class=name" in the spec directory, as a runtime would.
func resolveCDI(dir, id string) (cdiEdits, error) {
	kind, name, ok := strings.Cut(id, "=")
	if !ok {
		return cdiEdits{}, fmt.Errorf("CDI device %q: not kind=name", id)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return cdiEdits{}, err
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		var spec struct {
			Kind    string `json:"kind"`
			Devices []struct {
				Name           string   `json:"name"`
				ContainerEdits cdiEdits `json:"containerEdits"`
			} `json:"devices"`
		}
		if json.Unmarshal(data, &spec) != nil || spec.Kind != kind {
			continue
		}
		for _, d := range spec.Devices {
			if d.Name == name {
				return d.ContainerEdits, nil
			}
		}
	}
	return cdiEdits{}, fmt.Errorf("CDI device %q: no spec in %s", id, dir)
}

func run(root, cdiDir, listen, kubeconfig, nodeName string) error {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	if err := os.MkdirAll(root, 0o750); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	k := &kubelet{root: root, nodeName: nodeName, client: client, pods: map[string]*v1.Pod{}}
	if err := k.start(); err != nil {
		return err
	}
	defer k.stop()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "generation": k.generation})
	})
	mux.HandleFunc("GET /plugins/{driver}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"driver": r.PathValue("driver"), "registered": k.registered(r.PathValue("driver"))})
	})
	mux.HandleFunc("POST /pods", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Namespace string `json:"namespace"`
			Name      string `json:"name"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil || req.Namespace == "" || req.Name == "" {
			writeError(w, http.StatusBadRequest, fmt.Errorf("request body: want {\"namespace\", \"name\"} (%v)", err))
			return
		}
		pod, err := client.CoreV1().Pods(req.Namespace).Get(r.Context(), req.Name, metav1.GetOptions{})
		if err != nil {
			writeError(w, http.StatusNotFound, err)
			return
		}
		if pod.Spec.NodeName != nodeName {
			writeError(w, http.StatusUnprocessableEntity, fmt.Errorf("pod %s/%s is bound to %q, not %q", pod.Namespace, pod.Name, pod.Spec.NodeName, nodeName))
			return
		}
		key := pod.Namespace + "/" + pod.Name
		k.mu.Lock()
		if _, dup := k.pods[key]; dup {
			k.mu.Unlock()
			writeError(w, http.StatusConflict, fmt.Errorf("pod %s already admitted", key))
			return
		}
		k.pods[key] = pod
		m := k.manager
		k.mu.Unlock()
		if err := m.PrepareResources(r.Context(), pod); err != nil {
			k.mu.Lock()
			delete(k.pods, key)
			k.mu.Unlock()
			writeError(w, http.StatusUnprocessableEntity, err)
			return
		}
		res := admitResult{Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID)}
		for i := range pod.Spec.Containers {
			c := &pod.Spec.Containers[i]
			info, err := m.GetResources(pod, c)
			if err != nil {
				writeError(w, http.StatusUnprocessableEntity, err)
				return
			}
			cr := containerResult{Name: c.Name, CDIDevices: []string{}, Edits: map[string]cdiEdits{}}
			for _, d := range info.CDIDevices {
				cr.CDIDevices = append(cr.CDIDevices, d.Name)
				edits, err := resolveCDI(cdiDir, d.Name)
				if err != nil {
					writeError(w, http.StatusUnprocessableEntity, err)
					return
				}
				cr.Edits[d.Name] = edits
			}
			res.Containers = append(res.Containers, cr)
		}
		writeJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("DELETE /pods/{namespace}/{name}", func(w http.ResponseWriter, r *http.Request) {
		key := r.PathValue("namespace") + "/" + r.PathValue("name")
		k.mu.Lock()
		pod, ok := k.pods[key]
		m := k.manager
		k.mu.Unlock()
		if !ok {
			writeError(w, http.StatusNotFound, fmt.Errorf("pod %s was not admitted", key))
			return
		}
		if err := m.UnprepareResources(r.Context(), pod); err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		k.mu.Lock()
		delete(k.pods, key)
		k.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]string{"status": "removed"})
	})
	mux.HandleFunc("POST /restart", func(w http.ResponseWriter, r *http.Request) {
		k.mu.Lock()
		k.stop()
		k.mu.Unlock()
		// Like a kubelet restart: the manager is rebuilt from its checkpoint, the plugin watcher finds the
		// registration socket again.
		err := func() error {
			k.mu.Lock()
			defer k.mu.Unlock()
			return k.start()
		}()
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"generation": k.generation})
	})

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	url := "http://" + ln.Addr().String()
	if err := os.WriteFile(filepath.Join(root, "harness.url"), []byte(url+"\n"), 0o644); err != nil {
		return err
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	fmt.Printf("ready %s\n", url)
	<-ctx.Done()
	shutdown, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	err = hs.Shutdown(shutdown)
	if errors.Is(err, context.DeadlineExceeded) {
		return nil
	}
	return err
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
