package main

import (
	"sort"

	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager"
)

// The JSON the harness answers with. Field names are snake_case and stable: tests in other languages
// (the C++ agent's integration tests) parse them. See test/kube/README.md for the protocol.

type deviceInfo struct {
	ID        string  `json:"id"`
	Health    string  `json:"health"` // "Healthy" or "Unhealthy", as the manager sees it now
	NUMANodes []int64 `json:"numa_nodes"`
}

type resourceInfo struct {
	Name        string `json:"name"`
	Capacity    int64  `json:"capacity"`    // what the kubelet would put in Node.status.capacity
	Allocatable int64  `json:"allocatable"` // healthy devices: Node.status.allocatable
	// Registrations counts Register calls the kubelet accepted for this resource since the harness
	// started (across restarts); RegisteredSinceRestart says whether one came after the last restart.
	Registrations          int          `json:"registrations"`
	RegisteredSinceRestart bool         `json:"registered_since_restart"`
	Devices                []deviceInfo `json:"devices"`
}

type resourcesReply struct {
	Generation int            `json:"generation"` // 1 at start, +1 per restart
	StartedAt  string         `json:"started_at"`
	Resources  []resourceInfo `json:"resources"`
}

type mountInfo struct {
	ContainerPath string `json:"container_path"`
	HostPath      string `json:"host_path"`
	ReadOnly      bool   `json:"read_only"`
}

type deviceSpec struct {
	ContainerPath string `json:"container_path"`
	HostPath      string `json:"host_path"`
	Permissions   string `json:"permissions"`
}

type containerAlloc struct {
	Name string `json:"name"`
	// Devices maps resource name to the device IDs the manager assigned, sorted.
	Devices map[string][]string `json:"devices"`
	// The rest is what the container runtime would be told to do (DeviceRunContainerOptions); absent
	// from GET /pods, which reports only the assignment.
	Envs        map[string]string `json:"envs,omitempty"`
	Mounts      []mountInfo       `json:"mounts,omitempty"`
	DeviceSpecs []deviceSpec      `json:"device_specs,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	CDIDevices  []string          `json:"cdi_devices,omitempty"`
}

type podAllocation struct {
	Namespace  string            `json:"namespace"`
	Name       string            `json:"name"`
	UID        string            `json:"uid"`
	Containers []*containerAlloc `json:"containers"`
}

func containerAllocation(name string, devs devicemanager.ResourceDeviceInstances, opts *devicemanager.DeviceRunContainerOptions) *containerAlloc {
	out := &containerAlloc{Name: name, Devices: map[string][]string{}}
	for resource, instances := range devs {
		ids := make([]string, 0, len(instances))
		for id := range instances {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		out.Devices[resource] = ids
	}
	if opts == nil {
		return out
	}
	out.Envs = map[string]string{}
	for _, e := range opts.Envs {
		out.Envs[e.Name] = e.Value
	}
	out.Mounts = []mountInfo{}
	for _, m := range opts.Mounts {
		out.Mounts = append(out.Mounts, mountInfo{ContainerPath: m.ContainerPath, HostPath: m.HostPath, ReadOnly: m.ReadOnly})
	}
	out.DeviceSpecs = []deviceSpec{}
	for _, d := range opts.Devices {
		out.DeviceSpecs = append(out.DeviceSpecs, deviceSpec{ContainerPath: d.PathInContainer, HostPath: d.PathOnHost, Permissions: d.Permissions})
	}
	out.Annotations = map[string]string{}
	for _, a := range opts.Annotations {
		out.Annotations[a.Name] = a.Value
	}
	out.CDIDevices = []string{}
	for _, c := range opts.CDIDevices {
		out.CDIDevices = append(out.CDIDevices, c.Name)
	}
	return out
}
