// Command tessera-test-deviceplugin is a minimal device plugin for the foundation tests: it advertises N
// fake devices of one extended resource, registers with a kubelet (the real one or the device-manager
// harness) through <plugin-dir>/kubelet.sock, and answers Allocate with every kind of runtime setting a
// plugin can return (envs, mounts, device nodes, annotations, CDI devices) derived from the device IDs, so
// a test can check each of them. Like a production plugin it watches the plugin directory and registers
// again when the kubelet restarts (kubelet.sock is recreated).
//
// stdout carries one line per event, for tests to wait on:
//
//	serving <socket>
//	registered <resource> <count>      (count: registrations so far)
//
// stdin accepts "unhealthy <id>" and "healthy <id>", which change a device's health and push it to the
// kubelet through ListAndWatch.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	pluginapi "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

func main() {
	pluginDir := flag.String("plugin-dir", pluginapi.DevicePluginPath, "kubelet device plugin directory")
	resourceName := flag.String("resource", "tessera.dev/test-device", "extended resource to advertise")
	count := flag.Int("devices", 4, "number of devices (IDs <prefix>0 .. <prefix>N-1)")
	prefix := flag.String("id-prefix", "dev-", "device ID prefix")
	numa := flag.Int("numa-node", 0, "NUMA node reported for every device (-1: no topology)")
	flag.Parse()
	if *count < 1 || *count > 1024 {
		fmt.Fprintf(os.Stderr, "tessera-test-deviceplugin: --devices must be in 1..1024, got %d\n", *count)
		os.Exit(2)
	}
	p := newPlugin(*pluginDir, *resourceName, *count, *prefix, *numa)
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	go p.readCommands(os.Stdin)
	if err := p.run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "tessera-test-deviceplugin: %v\n", err)
		os.Exit(1)
	}
}

type plugin struct {
	pluginapi.UnimplementedDevicePluginServer

	dir, resource, socket string

	mu      sync.Mutex
	devices []*pluginapi.Device
	changed chan struct{} // closed and replaced whenever devices change
	regs    int
}

func newPlugin(dir, resource string, n int, prefix string, numa int) *plugin {
	p := &plugin{
		dir:      dir,
		resource: resource,
		socket:   "tessera-test-" + strings.NewReplacer("/", "_", ".", "_").Replace(resource) + ".sock",
		changed:  make(chan struct{}),
	}
	for i := 0; i < n; i++ {
		d := &pluginapi.Device{ID: fmt.Sprintf("%s%d", prefix, i), Health: pluginapi.Healthy}
		if numa >= 0 {
			d.Topology = &pluginapi.TopologyInfo{Nodes: []*pluginapi.NUMANode{{ID: int64(numa)}}}
		}
		p.devices = append(p.devices, d)
	}
	return p
}

func (p *plugin) snapshot() ([]*pluginapi.Device, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*pluginapi.Device, len(p.devices))
	for i, d := range p.devices {
		out[i] = &pluginapi.Device{ID: d.ID, Health: d.Health, Topology: d.Topology}
	}
	return out, p.changed
}

func (p *plugin) setHealth(id, health string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range p.devices {
		if d.ID == id {
			d.Health = health
			close(p.changed)
			p.changed = make(chan struct{})
			return nil
		}
	}
	return fmt.Errorf("no device %q", id)
}

func (p *plugin) readCommands(f *os.File) {
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 2 || (fields[0] != "healthy" && fields[0] != "unhealthy") {
			fmt.Fprintf(os.Stderr, "tessera-test-deviceplugin: unknown command %q (want: healthy|unhealthy <id>)\n", sc.Text())
			continue
		}
		health := pluginapi.Healthy
		if fields[0] == "unhealthy" {
			health = pluginapi.Unhealthy
		}
		if err := p.setHealth(fields[1], health); err != nil {
			fmt.Fprintf(os.Stderr, "tessera-test-deviceplugin: %v\n", err)
		}
	}
}

func (p *plugin) GetDevicePluginOptions(context.Context, *pluginapi.Empty) (*pluginapi.DevicePluginOptions, error) {
	return &pluginapi.DevicePluginOptions{PreStartRequired: true, GetPreferredAllocationAvailable: true}, nil
}

func (p *plugin) ListAndWatch(_ *pluginapi.Empty, stream pluginapi.DevicePlugin_ListAndWatchServer) error {
	for {
		devs, changed := p.snapshot()
		if err := stream.Send(&pluginapi.ListAndWatchResponse{Devices: devs}); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}

// GetPreferredAllocation prefers the lowest device IDs, so allocations are predictable in tests.
func (p *plugin) GetPreferredAllocation(_ context.Context, req *pluginapi.PreferredAllocationRequest) (*pluginapi.PreferredAllocationResponse, error) {
	resp := &pluginapi.PreferredAllocationResponse{}
	for _, cr := range req.ContainerRequests {
		chosen := append([]string{}, cr.MustIncludeDeviceIDs...)
		avail := append([]string{}, cr.AvailableDeviceIDs...)
		sort.Strings(avail)
		for _, id := range avail {
			if len(chosen) >= int(cr.AllocationSize) {
				break
			}
			if !contains(chosen, id) {
				chosen = append(chosen, id)
			}
		}
		resp.ContainerResponses = append(resp.ContainerResponses, &pluginapi.ContainerPreferredAllocationResponse{DeviceIDs: chosen})
	}
	return resp, nil
}

// Allocate derives every setting from the device IDs, so a test can predict each one exactly.
func (p *plugin) Allocate(_ context.Context, req *pluginapi.AllocateRequest) (*pluginapi.AllocateResponse, error) {
	resp := &pluginapi.AllocateResponse{}
	for _, cr := range req.ContainerRequests {
		ids := append([]string{}, cr.DevicesIds...)
		sort.Strings(ids)
		for _, id := range ids {
			if !p.known(id) {
				return nil, fmt.Errorf("unknown device %q", id)
			}
		}
		joined := strings.Join(ids, ",")
		car := &pluginapi.ContainerAllocateResponse{
			Envs:        map[string]string{"TESSERA_TEST_DEVICES": joined},
			Annotations: map[string]string{"tessera.dev/test-devices": joined},
		}
		for _, id := range ids {
			car.Mounts = append(car.Mounts, &pluginapi.Mount{ContainerPath: "/run/tessera-test/" + id, HostPath: "/var/lib/tessera-test/" + id, ReadOnly: true})
			car.Devices = append(car.Devices, &pluginapi.DeviceSpec{ContainerPath: "/dev/tessera-test-" + id, HostPath: "/dev/null", Permissions: "rw"})
			car.CdiDevices = append(car.CdiDevices, &pluginapi.CDIDevice{Name: "tessera.dev/test-device=" + id})
		}
		resp.ContainerResponses = append(resp.ContainerResponses, car)
	}
	return resp, nil
}

func (p *plugin) PreStartContainer(_ context.Context, req *pluginapi.PreStartContainerRequest) (*pluginapi.PreStartContainerResponse, error) {
	for _, id := range req.DevicesIds {
		if !p.known(id) {
			return nil, fmt.Errorf("unknown device %q", id)
		}
	}
	return &pluginapi.PreStartContainerResponse{}, nil
}

func (p *plugin) known(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range p.devices {
		if d.ID == id {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// run serves and registers, and does both again whenever kubelet.sock is created anew (a kubelet
// restart wipes the plugin directory, our socket included).
func (p *plugin) run(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	if err := os.MkdirAll(p.dir, 0o750); err != nil {
		return err
	}
	if err := w.Add(p.dir); err != nil {
		return err
	}
	kubeletSock := filepath.Join(p.dir, filepath.Base(pluginapi.KubeletSocket))

	var srv *grpc.Server
	defer func() {
		if srv != nil {
			srv.Stop()
		}
	}()
	// pending is set while a registration is owed: at start and after every new kubelet.sock. The
	// socket file appears at bind(), a moment before the kubelet accepts connections, and the kubelet
	// may not be up at all yet, so registration is retried until it succeeds.
	pending := true
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-w.Errors:
			return err
		case ev := <-w.Events:
			if ev.Name != kubeletSock || ev.Op&fsnotify.Create == 0 {
				continue
			}
			// A new kubelet wiped the directory (our socket too): serve afresh, then register.
			if srv != nil {
				srv.Stop()
				srv = nil
			}
			pending = true
			retry.Reset(0)
		case <-retry.C:
			if !pending {
				continue
			}
			if srv == nil {
				var err error
				if srv, err = p.serve(); err != nil {
					return err
				}
			}
			if _, err := os.Stat(kubeletSock); err != nil {
				continue // no kubelet yet: its socket's create event wakes us
			}
			if err := p.register(ctx, kubeletSock); err != nil {
				fmt.Fprintf(os.Stderr, "tessera-test-deviceplugin: register: %v (retrying)\n", err)
				retry.Reset(100 * time.Millisecond)
				continue
			}
			pending = false
		}
	}
}

func (p *plugin) serve() (*grpc.Server, error) {
	path := filepath.Join(p.dir, p.socket)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	srv := grpc.NewServer()
	pluginapi.RegisterDevicePluginServer(srv, p)
	go func() { _ = srv.Serve(ln) }()
	fmt.Printf("serving %s\n", path)
	return srv, nil
}

func (p *plugin) register(ctx context.Context, kubeletSock string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+kubeletSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	_, err = pluginapi.NewRegistrationClient(conn).Register(ctx, &pluginapi.RegisterRequest{
		Version:      pluginapi.Version,
		Endpoint:     p.socket,
		ResourceName: p.resource,
		Options:      &pluginapi.DevicePluginOptions{PreStartRequired: true, GetPreferredAllocationAvailable: true},
	}, grpc.WaitForReady(false))
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.regs++
	n := p.regs
	p.mu.Unlock()
	fmt.Printf("registered %s %d\n", p.resource, n)
	return nil
}
