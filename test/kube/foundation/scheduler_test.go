// Package foundation holds the integration tests that prove the local control plane and the kubelet
// device-manager harness are real. ctest runs the compiled test binary (built by test/kube/build) under
// the `kube` fixture; see test/integration/CMakeLists.txt.
package foundation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func mustEnv(t *testing.T, name string) string {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		t.Fatalf("%s is not set: run this test through ctest (fixture kube) or export it (see test/kube/README.md)", name)
	}
	return v
}

func clientset(t *testing.T) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", mustEnv(t, "TESSERA_KUBECONFIG"))
	if err != nil {
		t.Fatalf("kubeconfig: %v", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func suffix(t *testing.T) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestControlPlaneVersion checks that the API server is the pinned release, reached over verified TLS
// with the admin client certificate, and that kubectl from the same build talks to it.
func TestControlPlaneVersion(t *testing.T) {
	cs := clientset(t)
	v, err := cs.Discovery().ServerVersion()
	if err != nil {
		t.Fatalf("server version: %v", err)
	}
	want := mustEnv(t, "TESSERA_KUBE_VERSION")
	if v.GitVersion != want {
		t.Fatalf("kube-apiserver reports %q, want the pinned %q", v.GitVersion, want)
	}
	out, err := exec.Command(filepath.Join(mustEnv(t, "TESSERA_KUBE_BIN"), "kubectl"),
		"--kubeconfig", mustEnv(t, "TESSERA_KUBECONFIG"), "version", "-o", "json").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl version: %v\n%s", err, out)
	}
	var kv struct {
		ClientVersion struct{ GitVersion string } `json:"clientVersion"`
		ServerVersion struct{ GitVersion string } `json:"serverVersion"`
	}
	if err := json.Unmarshal(out, &kv); err != nil {
		t.Fatalf("kubectl version output: %v\n%s", err, out)
	}
	if kv.ClientVersion.GitVersion != want || kv.ServerVersion.GitVersion != want {
		t.Fatalf("kubectl client %q / server %q, want both %q", kv.ClientVersion.GitVersion, kv.ServerVersion.GitVersion, want)
	}
}

// TestSchedulerBindsExtendedResource creates a Node whose status advertises an extended resource and a
// second Node without it, then a Pod that requests the resource: kube-scheduler must bind it to the first
// Node. A second Pod that asks for more than what is left must stay unschedulable, with the resource
// named in the reason.
func TestSchedulerBindsExtendedResource(t *testing.T) {
	cs := clientset(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	id := suffix(t)
	res := v1.ResourceName("foundation.tessera.dev/widget-" + id)
	// A taint keeps other tests' pods off these nodes (and ours off theirs).
	taint := v1.Taint{Key: "foundation.tessera.dev/test", Value: id, Effect: v1.TaintEffectNoSchedule}
	toleration := v1.Toleration{Key: taint.Key, Operator: v1.TolerationOpEqual, Value: id, Effect: v1.TaintEffectNoSchedule}

	withRes := makeNode(ctx, t, cs, "foundation-"+id+"-widgets", taint, v1.ResourceList{res: resource.MustParse("4")})
	plain := makeNode(ctx, t, cs, "foundation-"+id+"-plain", taint, nil)

	first := makePod(ctx, t, cs, "foundation-"+id+"-a", toleration, v1.ResourceList{res: resource.MustParse("2")})
	bound := waitForPod(ctx, t, cs, first, "bound", func(p *v1.Pod) bool { return p.Spec.NodeName != "" })
	if bound.Spec.NodeName != withRes {
		t.Fatalf("pod %s bound to %q, want %q (the node with %s; %q has none)", first, bound.Spec.NodeName, withRes, res, plain)
	}
	if !hasCondition(bound, v1.PodScheduled, v1.ConditionTrue, "") {
		t.Fatalf("pod %s: no PodScheduled=True condition: %+v", first, bound.Status.Conditions)
	}

	second := makePod(ctx, t, cs, "foundation-"+id+"-b", toleration, v1.ResourceList{res: resource.MustParse("3")})
	pending := waitForPod(ctx, t, cs, second, "unschedulable", func(p *v1.Pod) bool {
		return hasCondition(p, v1.PodScheduled, v1.ConditionFalse, v1.PodReasonUnschedulable)
	})
	if pending.Spec.NodeName != "" {
		t.Fatalf("pod %s bound to %q although only 2 of 4 %s were left", second, pending.Spec.NodeName, res)
	}
	for _, c := range pending.Status.Conditions {
		if c.Type == v1.PodScheduled && !strings.Contains(c.Message, "Insufficient "+string(res)) {
			t.Fatalf("pod %s: unschedulable message does not name the resource: %q", second, c.Message)
		}
	}
}

func makeNode(ctx context.Context, t *testing.T, cs kubernetes.Interface, name string, taint v1.Taint, extra v1.ResourceList) string {
	t.Helper()
	node := &v1.Node{
		// The hostname label is what a kubelet would set; tests select their node by it.
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"foundation.tessera.dev/test": "true", v1.LabelHostname: name}},
		Spec:       v1.NodeSpec{Taints: []v1.Taint{taint}},
	}
	if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create node %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := cs.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete node %s: %v", name, err)
		}
	})
	// Capacity is status, which only the status subresource accepts (what a kubelet does when its
	// device plugins register).
	capacity := v1.ResourceList{
		v1.ResourceCPU:    resource.MustParse("8"),
		v1.ResourceMemory: resource.MustParse("32Gi"),
		v1.ResourcePods:   resource.MustParse("110"),
	}
	for k, v := range extra {
		capacity[k] = v
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{
		"capacity":    capacity,
		"allocatable": capacity,
		"conditions": []map[string]any{{
			"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "foundation test node",
			"lastHeartbeatTime": metav1.Now(), "lastTransitionTime": metav1.Now(),
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	n, err := cs.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil {
		t.Fatalf("patch node %s status: %v", name, err)
	}
	for k, v := range extra {
		if got := n.Status.Capacity[k]; got.Cmp(v) != 0 {
			t.Fatalf("node %s: capacity %s = %s after patch, want %s", name, k, got.String(), v.String())
		}
	}
	return name
}

func makePod(ctx context.Context, t *testing.T, cs kubernetes.Interface, name string, tol v1.Toleration, req v1.ResourceList) string {
	t.Helper()
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: metav1.NamespaceDefault},
		Spec: v1.PodSpec{
			Tolerations: []v1.Toleration{tol},
			Containers: []v1.Container{{
				Name:      "main",
				Image:     "registry.invalid/foundation:never-pulled",
				Resources: v1.ResourceRequirements{Requests: req, Limits: req},
			}},
		},
	}
	if _, err := cs.CoreV1().Pods(metav1.NamespaceDefault).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
	t.Cleanup(func() {
		// No kubelet confirms the deletion, so it has to be immediate.
		zero := int64(0)
		err := cs.CoreV1().Pods(metav1.NamespaceDefault).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete pod %s: %v", name, err)
		}
	})
	return name
}

func waitForPod(ctx context.Context, t *testing.T, cs kubernetes.Interface, name, what string, done func(*v1.Pod) bool) *v1.Pod {
	t.Helper()
	var last *v1.Pod
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(metav1.NamespaceDefault).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		last = p
		return done(p), nil
	})
	if err != nil {
		state := "never read"
		if last != nil {
			state = fmt.Sprintf("nodeName=%q conditions=%+v", last.Spec.NodeName, last.Status.Conditions)
		}
		t.Fatalf("pod %s never became %s: %v; last seen: %s", name, what, err, state)
	}
	return last
}

func hasCondition(p *v1.Pod, typ v1.PodConditionType, status v1.ConditionStatus, reason string) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == typ && c.Status == status && (reason == "" || c.Reason == reason) {
			return true
		}
	}
	return false
}

// TestAdditionalScheduler starts a second kube-scheduler with its own profile through
// test/kube/start-scheduler (the way the scheduler tests add one with Tessera's extender) and checks that it,
// not the default scheduler, binds a Pod that names it; --stop ends it.
func TestAdditionalScheduler(t *testing.T) {
	cs := clientset(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	id := suffix(t)
	name := "foundation-" + id
	config := filepath.Join(t.TempDir(), "scheduler.yaml")
	if err := os.WriteFile(config, []byte(`apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: "@KUBECONFIG@"
leaderElection:
  leaderElect: false
profiles:
- schedulerName: `+name+`
`), 0o644); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(mustEnv(t, "TESSERA_SOURCE_DIR"), "test", "kube", "start-scheduler")
	state := mustEnv(t, "TESSERA_KUBE_STATE")
	if out, err := exec.Command(script, "--state", state, "--name", id, "--config", config).CombinedOutput(); err != nil {
		t.Fatalf("start-scheduler: %v\n%s", err, out)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		if out, err := exec.Command(script, "--state", state, "--stop", id).CombinedOutput(); err != nil {
			t.Errorf("start-scheduler --stop: %v\n%s", err, out)
		}
	}
	t.Cleanup(stop)

	taint := v1.Taint{Key: "foundation.tessera.dev/test", Value: id, Effect: v1.TaintEffectNoSchedule}
	toleration := v1.Toleration{Key: taint.Key, Operator: v1.TolerationOpEqual, Value: id, Effect: v1.TaintEffectNoSchedule}
	node := makeNode(ctx, t, cs, name+"-node", taint, nil)
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-pod", Namespace: metav1.NamespaceDefault},
		Spec: v1.PodSpec{
			SchedulerName: name,
			Tolerations:   []v1.Toleration{toleration},
			NodeSelector:  map[string]string{v1.LabelHostname: node},
			Containers:    []v1.Container{{Name: "main", Image: "registry.invalid/foundation:never-pulled"}},
		},
	}
	if _, err := cs.CoreV1().Pods(metav1.NamespaceDefault).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod: %v", err)
	}
	t.Cleanup(func() {
		zero := int64(0)
		_ = cs.CoreV1().Pods(metav1.NamespaceDefault).Delete(context.Background(), pod.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	})
	bound := waitForPod(ctx, t, cs, pod.Name, "bound", func(p *v1.Pod) bool { return p.Spec.NodeName != "" })
	if bound.Spec.NodeName != node {
		t.Fatalf("pod bound to %q, want %q", bound.Spec.NodeName, node)
	}
	// The scheduler records the event after binding, through its asynchronous event broadcaster: wait for it.
	var by []string
	for deadline := time.Now().Add(20 * time.Second); ; {
		events, err := cs.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod.Name})
		if err != nil {
			t.Fatal(err)
		}
		by = nil
		for _, e := range events.Items {
			if e.Reason == "Scheduled" {
				by = append(by, e.ReportingController+e.Source.Component)
			}
		}
		if len(by) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(by) != 1 || by[0] != name {
		t.Fatalf("Scheduled events reported by %v, want exactly one by %q", by, name)
	}
	stop()
	if _, err := os.Stat(filepath.Join(state, "run", "kube-scheduler-"+id+".pid")); !os.IsNotExist(err) {
		t.Fatalf("after --stop the pid file is still there (err %v)", err)
	}
}
