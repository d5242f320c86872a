package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	v1 "k8s.io/api/core/v1"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
	"k8s.io/kubernetes/pkg/kubelet/apis/podresources"
	"k8s.io/kubernetes/pkg/kubelet/cm/devicemanager"
)

// The kubelet's PodResources API (v1), served by the kubelet's own server code over this harness's pods
// and device manager. CPUs, memory and dynamic resources are reported empty: the harness has no CPU or
// memory manager and no DRA.

type podsProvider struct{ k *kubelet }

func (p podsProvider) GetActivePods() []*v1.Pod { return p.k.activePods() }
func (p podsProvider) GetPods() []*v1.Pod       { return p.k.activePods() }
func (p podsProvider) GetPodByName(namespace, name string) (*v1.Pod, bool) {
	for _, pod := range p.k.activePods() {
		if pod.Namespace == namespace && pod.Name == name {
			return pod, true
		}
	}
	return nil, false
}

type devicesProvider struct{ k *kubelet }

func (d devicesProvider) UpdateAllocatedDevices() {
	if m := d.k.manager(); m != nil {
		m.UpdateAllocatedDevices()
	}
}

func (d devicesProvider) GetDevices(podUID, containerName string) []*podresourcesv1.ContainerDevices {
	m := d.k.manager()
	if m == nil {
		return nil
	}
	return toContainerDevices(m.GetDevices(podUID, containerName))
}

func (d devicesProvider) GetAllocatableDevices() []*podresourcesv1.ContainerDevices {
	m := d.k.manager()
	if m == nil {
		return nil
	}
	return toContainerDevices(m.GetAllocatableDevices())
}

// toContainerDevices reports one entry per device and NUMA node, as the kubelet's container manager does.
func toContainerDevices(devs devicemanager.ResourceDeviceInstances) []*podresourcesv1.ContainerDevices {
	var out []*podresourcesv1.ContainerDevices
	for _, resource := range sortedKeys(devs) {
		for _, id := range sortedKeys(devs[resource]) {
			nodes := devs[resource][id].GetTopology().GetNodes()
			if len(nodes) == 0 {
				out = append(out, &podresourcesv1.ContainerDevices{ResourceName: resource, DeviceIds: []string{id}})
				continue
			}
			for _, n := range nodes {
				out = append(out, &podresourcesv1.ContainerDevices{
					ResourceName: resource,
					DeviceIds:    []string{id},
					Topology:     &podresourcesv1.TopologyInfo{Nodes: []*podresourcesv1.NUMANode{{ID: n.GetID()}}},
				})
			}
		}
	}
	return out
}

type noCPUs struct{}

func (noCPUs) GetCPUs(string, string) []int64 { return nil }
func (noCPUs) GetAllocatableCPUs() []int64    { return nil }

type noMemory struct{}

func (noMemory) GetMemory(string, string) []*podresourcesv1.ContainerMemory { return nil }
func (noMemory) GetAllocatableMemory() []*podresourcesv1.ContainerMemory    { return nil }

type noDynamicResources struct{}

func (noDynamicResources) GetDynamicResources(*v1.Pod, *v1.Container) []*podresourcesv1.DynamicResource {
	return nil
}

// servePodResources listens on socket (replacing a stale one) and serves until the returned server is stopped.
func servePodResources(ctx context.Context, socket string, k *kubelet) (*grpc.Server, error) {
	if err := os.MkdirAll(filepath.Dir(socket), 0o750); err != nil {
		return nil, err
	}
	if err := os.Remove(socket); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("remove stale %s: %w", socket, err)
	}
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return nil, err
	}
	srv := grpc.NewServer()
	podresourcesv1.RegisterPodResourcesListerServer(srv, podresources.NewV1PodResourcesServer(ctx, podresources.PodResourcesProviders{
		Pods:             podsProvider{k},
		Devices:          devicesProvider{k},
		Cpus:             noCPUs{},
		Memory:           noMemory{},
		DynamicResources: noDynamicResources{},
	}))
	go func() { _ = srv.Serve(ln) }()
	return srv, nil
}
