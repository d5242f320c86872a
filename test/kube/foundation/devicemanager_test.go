package foundation

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
	"k8s.io/kubernetes/pkg/kubelet/apis/podresources"
)

const testResource = "tessera.dev/test-device"

// proc is a child process whose stdout lines a test can wait for and whose stderr goes to a log file
// that is printed when the test fails.
type proc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

func startProc(t *testing.T, logPath string, name string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(name, args...)
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{cmd: cmd, stdin: stdin, lines: make(chan string, 100)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logf.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logPath); err == nil {
				t.Logf("--- stderr of %s ---\n%s", filepath.Base(name), b)
			}
		}
	})
	return p
}

// waitLine waits for a stdout line with the given prefix and returns it.
func (p *proc) waitLine(t *testing.T, prefix string, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Fatalf("%s exited before printing %q", p.cmd.Path, prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-deadline:
			t.Fatalf("%s did not print %q within %v", p.cmd.Path, prefix, timeout)
		}
	}
}

type harness struct {
	t   *testing.T
	url string
}

func (h *harness) call(method, path string, body any, out any) int {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, h.url+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			h.t.Fatalf("%s %s: bad JSON %q: %v", method, path, b, err)
		}
	}
	return resp.StatusCode
}

type device struct {
	ID        string  `json:"id"`
	Health    string  `json:"health"`
	NUMANodes []int64 `json:"numa_nodes"`
}

type resourceState struct {
	Name                   string   `json:"name"`
	Capacity               int64    `json:"capacity"`
	Allocatable            int64    `json:"allocatable"`
	Registrations          int      `json:"registrations"`
	RegisteredSinceRestart bool     `json:"registered_since_restart"`
	Devices                []device `json:"devices"`
}

type resources struct {
	Generation int             `json:"generation"`
	Resources  []resourceState `json:"resources"`
}

type mount struct {
	ContainerPath string `json:"container_path"`
	HostPath      string `json:"host_path"`
	ReadOnly      bool   `json:"read_only"`
}

type devSpec struct {
	ContainerPath string `json:"container_path"`
	HostPath      string `json:"host_path"`
	Permissions   string `json:"permissions"`
}

type container struct {
	Name        string              `json:"name"`
	Devices     map[string][]string `json:"devices"`
	Envs        map[string]string   `json:"envs"`
	Mounts      []mount             `json:"mounts"`
	DeviceSpecs []devSpec           `json:"device_specs"`
	Annotations map[string]string   `json:"annotations"`
	CDIDevices  []string            `json:"cdi_devices"`
}

type admitted struct {
	Namespace  string      `json:"namespace"`
	Name       string      `json:"name"`
	UID        string      `json:"uid"`
	Containers []container `json:"containers"`
	Error      string      `json:"error"`
}

// waitResource polls GET /resources until cond holds for testResource.
func (h *harness) waitResource(what string, cond func(resourceState) bool) resourceState {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last resources
	for time.Now().Before(deadline) {
		last = resources{}
		if code := h.call("GET", "/resources", nil, &last); code == http.StatusOK {
			for _, r := range last.Resources {
				if r.Name == testResource && cond(r) {
					return r
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.t.Fatalf("resource %s never became %s; last state: %+v", testResource, what, last)
	return resourceState{}
}

func (h *harness) admit(name string, count int) (int, admitted) {
	h.t.Helper()
	var out admitted
	code := h.call("POST", "/pods", map[string]any{
		"namespace":  "default",
		"name":       name,
		"containers": []map[string]any{{"name": "main", "resources": map[string]string{testResource: fmt.Sprint(count)}}},
	}, &out)
	return code, out
}

func healthyIDs(r resourceState) []string {
	var ids []string
	for _, d := range r.Devices {
		if d.Health == "Healthy" {
			ids = append(ids, d.ID)
		}
	}
	return ids
}

// TestDevicePluginAllocationAndRestart registers the test device plugin with the kubelet's device
// manager (through the harness), admits pods and checks every part of the allocation, reads it back
// through the PodResources API, follows a health change, and restarts the "kubelet": the plugin must
// register again and the allocation made before the restart must survive it.
func TestDevicePluginAllocationAndRestart(t *testing.T) {
	bin := mustEnv(t, "TESSERA_KUBE_BIN")
	// Short root: unix socket paths are limited to 108 bytes.
	root, err := os.MkdirTemp("", "tdm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	logs := t.TempDir()

	hp := startProc(t, filepath.Join(logs, "harness.log"), filepath.Join(bin, "kubelet-devicemanager"), "--root", root, "--v", "2")
	h := &harness{t: t, url: strings.TrimPrefix(hp.waitLine(t, "ready ", 30*time.Second), "ready ")}

	pp := startProc(t, filepath.Join(logs, "plugin.log"), filepath.Join(bin, "tessera-test-deviceplugin"),
		"--plugin-dir", filepath.Join(root, "device-plugins"), "--resource", testResource, "--devices", "4")
	pp.waitLine(t, "registered "+testResource+" 1", 20*time.Second)

	r := h.waitResource("4 healthy devices", func(r resourceState) bool { return r.Allocatable == 4 })
	if r.Capacity != 4 || r.Registrations != 1 || !reflect.DeepEqual(healthyIDs(r), []string{"dev-0", "dev-1", "dev-2", "dev-3"}) {
		t.Fatalf("after registration: %+v", r)
	}
	for _, d := range r.Devices {
		if !reflect.DeepEqual(d.NUMANodes, []int64{0}) {
			t.Fatalf("device %s: numa_nodes %v, want [0]", d.ID, d.NUMANodes)
		}
	}

	// Admission: the plugin prefers the lowest IDs, and every setting is derived from the IDs.
	code, a := h.admit("p1", 2)
	if code != http.StatusOK {
		t.Fatalf("admit p1: HTTP %d: %s", code, a.Error)
	}
	if len(a.Containers) != 1 {
		t.Fatalf("admit p1: containers %+v", a.Containers)
	}
	c := a.Containers[0]
	wantIDs := []string{"dev-0", "dev-1"}
	if !reflect.DeepEqual(c.Devices, map[string][]string{testResource: wantIDs}) {
		t.Fatalf("p1 devices %v, want %v", c.Devices, wantIDs)
	}
	if got := c.Envs["TESSERA_TEST_DEVICES"]; got != "dev-0,dev-1" {
		t.Fatalf("p1 env TESSERA_TEST_DEVICES=%q", got)
	}
	if got := c.Annotations["tessera.dev/test-devices"]; got != "dev-0,dev-1" {
		t.Fatalf("p1 annotation %q", got)
	}
	sort.Slice(c.Mounts, func(i, j int) bool { return c.Mounts[i].ContainerPath < c.Mounts[j].ContainerPath })
	if !reflect.DeepEqual(c.Mounts, []mount{
		{"/run/tessera-test/dev-0", "/var/lib/tessera-test/dev-0", true},
		{"/run/tessera-test/dev-1", "/var/lib/tessera-test/dev-1", true},
	}) {
		t.Fatalf("p1 mounts %+v", c.Mounts)
	}
	sort.Slice(c.DeviceSpecs, func(i, j int) bool { return c.DeviceSpecs[i].ContainerPath < c.DeviceSpecs[j].ContainerPath })
	if !reflect.DeepEqual(c.DeviceSpecs, []devSpec{
		{"/dev/tessera-test-dev-0", "/dev/null", "rw"},
		{"/dev/tessera-test-dev-1", "/dev/null", "rw"},
	}) {
		t.Fatalf("p1 device specs %+v", c.DeviceSpecs)
	}
	sort.Strings(c.CDIDevices)
	if !reflect.DeepEqual(c.CDIDevices, []string{"tessera.dev/test-device=dev-0", "tessera.dev/test-device=dev-1"}) {
		t.Fatalf("p1 CDI devices %v", c.CDIDevices)
	}

	// The same allocation, read back the way a node agent does: the kubelet PodResources v1 API.
	checkPodResources(t, filepath.Join(root, "pod-resources", "kubelet.sock"), map[string][]string{"p1": wantIDs}, 4)

	// Health: the plugin reports dev-3 unhealthy; the manager stops offering it, so a pod asking for
	// two more devices (only dev-2 is left) is refused and leaves nothing behind.
	fmt.Fprintln(pp.stdin, "unhealthy dev-3")
	r = h.waitResource("dev-3 unhealthy", func(r resourceState) bool { return r.Allocatable == 3 })
	if r.Capacity != 4 || reflect.DeepEqual(healthyIDs(r), []string{"dev-0", "dev-1", "dev-2", "dev-3"}) {
		t.Fatalf("after dev-3 unhealthy: %+v", r)
	}
	code, a = h.admit("p2", 2)
	if code != http.StatusUnprocessableEntity || !strings.Contains(a.Error, "Requested: 2, Available: 1") {
		t.Fatalf("admit p2 with 1 device free: HTTP %d %q, want 422 naming the shortage", code, a.Error)
	}
	var pods struct{ Pods []admitted }
	h.call("GET", "/pods", nil, &pods)
	if len(pods.Pods) != 1 || pods.Pods[0].Name != "p1" {
		t.Fatalf("after refused admission, pods = %+v, want only p1", pods.Pods)
	}
	fmt.Fprintln(pp.stdin, "healthy dev-3")
	h.waitResource("dev-3 healthy again", func(r resourceState) bool { return r.Allocatable == 4 })

	// Kubelet restart: the plugin must notice the new kubelet.sock and register again; p1 keeps its
	// devices through the checkpoint.
	var after resources
	if code := h.call("POST", "/restart", nil, &after); code != http.StatusOK || after.Generation != 2 {
		t.Fatalf("restart: HTTP %d, generation %d", code, after.Generation)
	}
	pp.waitLine(t, "registered "+testResource+" 2", 20*time.Second)
	r = h.waitResource("registered again with 4 healthy devices", func(r resourceState) bool {
		return r.RegisteredSinceRestart && r.Allocatable == 4
	})
	if r.Registrations != 2 {
		t.Fatalf("registrations after restart = %d, want 2", r.Registrations)
	}
	h.call("GET", "/pods", nil, &pods)
	if len(pods.Pods) != 1 || !reflect.DeepEqual(pods.Pods[0].Containers[0].Devices[testResource], wantIDs) {
		t.Fatalf("after restart, pods = %+v, want p1 with %v", pods.Pods, wantIDs)
	}
	code, a = h.admit("p2", 2)
	if code != http.StatusOK || !reflect.DeepEqual(a.Containers[0].Devices[testResource], []string{"dev-2", "dev-3"}) {
		t.Fatalf("admit p2 after restart: HTTP %d %+v, want dev-2,dev-3", code, a)
	}

	// Removing p1 frees its devices for the next pod.
	if code := h.call("DELETE", "/pods/default/p1", nil, nil); code != http.StatusOK {
		t.Fatalf("delete p1: HTTP %d", code)
	}
	code, a = h.admit("p3", 2)
	if code != http.StatusOK || !reflect.DeepEqual(a.Containers[0].Devices[testResource], wantIDs) {
		t.Fatalf("admit p3 after p1 left: HTTP %d %+v, want %v", code, a, wantIDs)
	}
	checkPodResources(t, filepath.Join(root, "pod-resources", "kubelet.sock"),
		map[string][]string{"p2": {"dev-2", "dev-3"}, "p3": wantIDs}, 4)

	// Bad input is refused with the field named, and nothing is admitted.
	code, a = h.admit("Bad_Name", 1)
	if code != http.StatusBadRequest || !strings.Contains(a.Error, "name \"Bad_Name\"") {
		t.Fatalf("admit with invalid name: HTTP %d %q", code, a.Error)
	}
}

func checkPodResources(t *testing.T, socket string, want map[string][]string, allocatable int) {
	t.Helper()
	client, conn, err := podresources.GetV1Client(socket, 10*time.Second, 1<<20)
	if err != nil {
		t.Fatalf("pod resources client: %v", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := client.List(ctx, &podresourcesv1.ListPodResourcesRequest{})
	if err != nil {
		t.Fatalf("PodResources List: %v", err)
	}
	got := map[string][]string{}
	for _, p := range list.GetPodResources() {
		for _, c := range p.GetContainers() {
			for _, d := range c.GetDevices() {
				if d.GetResourceName() == testResource {
					got[p.GetName()] = append(got[p.GetName()], d.GetDeviceIds()...)
				}
			}
		}
	}
	for _, ids := range got {
		sort.Strings(ids)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("PodResources List: devices per pod %v, want %v", got, want)
	}
	alloc, err := client.GetAllocatableResources(ctx, &podresourcesv1.AllocatableResourcesRequest{})
	if err != nil {
		t.Fatalf("PodResources GetAllocatableResources: %v", err)
	}
	n := 0
	for _, d := range alloc.GetDevices() {
		if d.GetResourceName() == testResource {
			n += len(d.GetDeviceIds())
		}
	}
	if n != allocatable {
		t.Fatalf("PodResources GetAllocatableResources: %d devices of %s, want %d", n, testResource, allocatable)
	}
}
