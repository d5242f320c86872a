package main

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"sort"
	"sync"
	"time"
	"unsafe"

	cadvisorapi "github.com/google/cadvisor/info/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	"k8s.io/kubernetes/pkg/kubelet/cm/containermap"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager"
	"k8s.io/kubernetes/pkg/kubelet/cm/topologymanager"
	kubeletmetrics "k8s.io/kubernetes/pkg/kubelet/metrics"
)

// The kubelet builds its device manager with devicemanager.NewManagerImpl, which hard-codes the socket
// /var/lib/kubelet/device-plugins/kubelet.sock. The package's own constructor underneath takes the
// socket path (the package's tests use it), so the harness binds to that one instead of needing root
// and a bind mount. If a Kubernetes upgrade renames it, the build fails at link time, not silently.
//
//go:linkname newManagerImpl k8s.io/kubernetes/pkg/kubelet/cm/devicemanager.newManagerImpl
func newManagerImpl(logger klog.Logger, socketPath string, topology []cadvisorapi.Node, topologyAffinityStore topologymanager.Store) (*devicemanager.ManagerImpl, error)

// kubelet is the part of a kubelet that the device manager talks to: the pods it runs (for
// ActivePods and the PodResources API) and the manager itself, which Restart replaces the way a
// kubelet restart does. All methods are safe for concurrent use; admissions and restarts are serialized.
type kubelet struct {
	pluginDir string
	logger    klog.Logger

	// opMu serializes admission, removal and restart, as the kubelet's pod workers do for one pod.
	opMu sync.Mutex

	mu          sync.Mutex // guards the fields below
	mgr         *devicemanager.ManagerImpl
	generation  int
	startedAt   time.Time
	regsAtStart map[string]float64
	pods        []*v1.Pod // admitted (running) pods, in admission order
}

type allReady struct{}

func (allReady) AddSource(string) {}
func (allReady) AllReady() bool   { return true }

var registerMetricsOnce sync.Once

func newKubelet(pluginDir string, logger klog.Logger) *kubelet {
	registerMetricsOnce.Do(func() {
		legacyregistry.MustRegister(kubeletmetrics.DevicePluginRegistrationCount)
	})
	return &kubelet{pluginDir: pluginDir, logger: logger}
}

// activePods is what the kubelet's pod manager reports: pods admitted and not yet removed.
func (k *kubelet) activePods() []*v1.Pod {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := make([]*v1.Pod, len(k.pods))
	copy(out, k.pods)
	return out
}

func (k *kubelet) manager() *devicemanager.ManagerImpl {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.mgr
}

// start creates a fresh device manager on the plugin directory and starts its registration server.
// Like a kubelet starting up, it reads the checkpoint left by the previous manager and tells the
// manager which containers are already running, so their devices stay theirs.
func (k *kubelet) start() error {
	// Single NUMA node and the "none" topology policy: the kubelet's defaults on a plain node.
	topology := []cadvisorapi.Node{{Id: 0}}
	store, err := topologymanager.NewManager(topology, topologymanager.PolicyNone, topologymanager.ContainerTopologyScope, nil)
	if err != nil {
		return fmt.Errorf("topology manager: %w", err)
	}
	mgr, err := newManagerImpl(k.logger, filepath.Join(k.pluginDir, filepath.Base(pluginapi.KubeletSocket)), topology, store)
	if err != nil {
		return fmt.Errorf("device manager: %w", err)
	}
	if err := checkIntrospection(mgr); err != nil {
		return err
	}
	running := containermap.NewContainerMap()
	runningSet := sets.New[string]()
	for _, p := range k.activePods() {
		for _, c := range allContainers(p) {
			id := containerID(p, c.Name)
			running.Add(string(p.UID), c.Name, id)
			runningSet.Insert(id)
		}
	}
	regs := registrationCounts()
	if err := mgr.Start(k.logger, k.activePods, allReady{}, running, runningSet); err != nil {
		return fmt.Errorf("device manager start: %w", err)
	}
	k.mu.Lock()
	k.mgr = mgr
	k.generation++
	k.startedAt = time.Now()
	k.regsAtStart = regs
	k.mu.Unlock()
	return nil
}

func (k *kubelet) stop() error {
	k.mu.Lock()
	mgr := k.mgr
	k.mgr = nil
	k.mu.Unlock()
	if mgr == nil {
		return nil
	}
	return mgr.Stop(k.logger)
}

// restart is a kubelet restart: the old manager goes away (plugins see their connection drop), the
// new one wipes the sockets in the plugin directory and listens again, and every plugin has to
// notice the new kubelet.sock and register again.
func (k *kubelet) restart() error {
	k.opMu.Lock()
	defer k.opMu.Unlock()
	if err := k.stop(); err != nil {
		return err
	}
	return k.start()
}

func containerID(p *v1.Pod, name string) string { return "harness://" + string(p.UID) + "/" + name }

func allContainers(p *v1.Pod) []*v1.Container {
	var out []*v1.Container
	for i := range p.Spec.InitContainers {
		out = append(out, &p.Spec.InitContainers[i])
	}
	for i := range p.Spec.Containers {
		out = append(out, &p.Spec.Containers[i])
	}
	return out
}

// admit runs the kubelet's admission of one pod through the device manager: Allocate for each
// container, init containers first, then the run options each container would start with. On any
// error the pod is dropped again and its devices released, so nothing is half-applied.
func (k *kubelet) admit(ctx context.Context, pod *v1.Pod) (*podAllocation, error) {
	k.opMu.Lock()
	defer k.opMu.Unlock()
	mgr := k.manager()
	if mgr == nil {
		return nil, fmt.Errorf("device manager is not running")
	}
	k.mu.Lock()
	for _, p := range k.pods {
		if p.UID == pod.UID || (p.Namespace == pod.Namespace && p.Name == pod.Name) {
			k.mu.Unlock()
			return nil, &conflictError{fmt.Sprintf("pod %s/%s (uid %s) is already admitted", p.Namespace, p.Name, p.UID)}
		}
	}
	// The pod has to be active while it is allocated: the manager frees devices of inactive pods
	// before each container's allocation.
	k.pods = append(k.pods, pod)
	k.mu.Unlock()

	result, err := k.allocate(ctx, mgr, pod)
	if err != nil {
		k.dropPod(pod.UID)
		mgr.UpdateAllocatedDevices()
		return nil, err
	}
	return result, nil
}

func (k *kubelet) allocate(ctx context.Context, mgr *devicemanager.ManagerImpl, pod *v1.Pod) (*podAllocation, error) {
	for _, c := range allContainers(pod) {
		if err := mgr.Allocate(pod, c); err != nil {
			return nil, fmt.Errorf("container %q: %w", c.Name, err)
		}
	}
	out := &podAllocation{Namespace: pod.Namespace, Name: pod.Name, UID: string(pod.UID)}
	for _, c := range allContainers(pod) {
		opts, err := mgr.GetDeviceRunContainerOptions(ctx, pod, c)
		if err != nil {
			return nil, fmt.Errorf("container %q: run options: %w", c.Name, err)
		}
		out.Containers = append(out.Containers, containerAllocation(c.Name, mgr.GetDevices(string(pod.UID), c.Name), opts))
	}
	return out, nil
}

func (k *kubelet) dropPod(uid types.UID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i, p := range k.pods {
		if p.UID == uid {
			k.pods = append(k.pods[:i], k.pods[i+1:]...)
			return
		}
	}
}

// remove is the pod terminating: it leaves the active set and the manager frees its devices.
func (k *kubelet) remove(namespace, name string) error {
	k.opMu.Lock()
	defer k.opMu.Unlock()
	k.mu.Lock()
	idx := -1
	for i, p := range k.pods {
		if p.Namespace == namespace && p.Name == name {
			idx = i
		}
	}
	if idx < 0 {
		k.mu.Unlock()
		return &notFoundError{fmt.Sprintf("pod %s/%s is not admitted", namespace, name)}
	}
	k.pods = append(k.pods[:idx], k.pods[idx+1:]...)
	mgr := k.mgr
	k.mu.Unlock()
	if mgr != nil {
		mgr.UpdateAllocatedDevices()
	}
	return nil
}

// podAllocations reports what the manager holds for every admitted pod (devices per container and
// the run options the container would get).
func (k *kubelet) podAllocations(ctx context.Context) ([]*podAllocation, error) {
	mgr := k.manager()
	if mgr == nil {
		return nil, fmt.Errorf("device manager is not running")
	}
	var out []*podAllocation
	for _, p := range k.activePods() {
		pa := &podAllocation{Namespace: p.Namespace, Name: p.Name, UID: string(p.UID)}
		for _, c := range allContainers(p) {
			pa.Containers = append(pa.Containers, containerAllocation(c.Name, mgr.GetDevices(string(p.UID), c.Name), nil))
		}
		out = append(out, pa)
	}
	return out, nil
}

// resources lists every resource the manager knows: its capacity as the kubelet would publish it on
// the Node, every device with its health, and how often its plugin registered.
func (k *kubelet) resources() (*resourcesReply, error) {
	k.mu.Lock()
	mgr, gen, startedAt, regsAtStart := k.mgr, k.generation, k.startedAt, k.regsAtStart
	k.mu.Unlock()
	if mgr == nil {
		return nil, fmt.Errorf("device manager is not running")
	}
	capacity, allocatable, _ := mgr.GetCapacity()
	healthy := mgr.GetAllocatableDevices()
	all := allDevices(mgr)
	regs := registrationCounts()

	names := sets.New[string]()
	for r := range capacity {
		names.Insert(string(r))
	}
	for r := range all {
		names.Insert(r)
	}
	reply := &resourcesReply{Generation: gen, StartedAt: startedAt.UTC().Format(time.RFC3339Nano), Resources: []resourceInfo{}}
	for _, name := range sets.List(names) {
		ri := resourceInfo{
			Name:                   name,
			Registrations:          int(regs[name]),
			RegisteredSinceRestart: regs[name] > regsAtStart[name],
			Devices:                []deviceInfo{},
		}
		if q, ok := capacity[v1.ResourceName(name)]; ok {
			ri.Capacity = q.Value()
		}
		if q, ok := allocatable[v1.ResourceName(name)]; ok {
			ri.Allocatable = q.Value()
		}
		ids := make([]string, 0, len(all[name]))
		for id := range all[name] {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			d := all[name][id]
			di := deviceInfo{ID: id, Health: pluginapi.Unhealthy, NUMANodes: []int64{}}
			if _, ok := healthy[name][id]; ok {
				di.Health = pluginapi.Healthy
			}
			for _, n := range d.GetTopology().GetNodes() {
				di.NUMANodes = append(di.NUMANodes, n.GetID())
			}
			ri.Devices = append(ri.Devices, di)
		}
		reply.Resources = append(reply.Resources, ri)
	}
	return reply, nil
}

// registrationCounts reads the kubelet's own registration counter per resource.
func registrationCounts() map[string]float64 {
	out := map[string]float64{}
	families, err := legacyregistry.DefaultGatherer.Gather()
	if err != nil {
		return out
	}
	want := kubeletmetrics.KubeletSubsystem + "_" + kubeletmetrics.DevicePluginRegistrationCountKey
	for _, f := range families {
		if f.GetName() != want {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "resource_name" {
					out[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// The manager exposes healthy devices (GetAllocatableDevices) but not the unhealthy ones, which a test
// of health reporting needs to see. They live in the unexported allDevices field, guarded by the
// unexported mutex; checkIntrospection verifies both are still there with the expected types when the
// harness starts, so a Kubernetes upgrade that changes them fails loudly instead of reading garbage.
func checkIntrospection(mgr *devicemanager.ManagerImpl) error {
	v := reflect.ValueOf(mgr).Elem()
	mu := v.FieldByName("mutex")
	all := v.FieldByName("allDevices")
	if !mu.IsValid() || mu.Type() != reflect.TypeOf(sync.Mutex{}) {
		return fmt.Errorf("devicemanager.ManagerImpl has no field mutex of type sync.Mutex; update test/kube/devicemanager for this Kubernetes version")
	}
	if !all.IsValid() || all.Type() != reflect.TypeOf(devicemanager.ResourceDeviceInstances{}) {
		return fmt.Errorf("devicemanager.ManagerImpl has no field allDevices of type ResourceDeviceInstances; update test/kube/devicemanager for this Kubernetes version")
	}
	return nil
}

func allDevices(mgr *devicemanager.ManagerImpl) devicemanager.ResourceDeviceInstances {
	v := reflect.ValueOf(mgr).Elem()
	mu := (*sync.Mutex)(unsafe.Pointer(v.FieldByName("mutex").UnsafeAddr()))
	all := (*devicemanager.ResourceDeviceInstances)(unsafe.Pointer(v.FieldByName("allDevices").UnsafeAddr()))
	mu.Lock()
	defer mu.Unlock()
	return all.Clone()
}

type conflictError struct{ msg string }

func (e *conflictError) Error() string { return e.msg }

type notFoundError struct{ msg string }

func (e *notFoundError) Error() string { return e.msg }

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
