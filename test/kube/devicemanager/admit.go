package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
)

// admitRequest is the body of POST /pods. Exactly one of three forms:
//   - {"pod": <v1.Pod>}: a full pod object (e.g. `kubectl get pod -o json`);
//   - {"namespace", "name", "from_api": true}: the harness fetches the pod from kube-apiserver, like a
//     kubelet receiving it (needs --kubeconfig; with --node-name the pod must be bound to that node);
//   - {"namespace", "name", "uid", "containers": [...], "init_containers": [...]}: a pod built from
//     per-container resource maps; each quantity becomes both request and limit, as the API server
//     requires for extended resources.
type admitRequest struct {
	Pod            *v1.Pod            `json:"pod,omitempty"`
	Namespace      string             `json:"namespace,omitempty"`
	Name           string             `json:"name,omitempty"`
	UID            string             `json:"uid,omitempty"`
	FromAPI        bool               `json:"from_api,omitempty"`
	Containers     []containerRequest `json:"containers,omitempty"`
	InitContainers []containerRequest `json:"init_containers,omitempty"`
}

type containerRequest struct {
	Name      string            `json:"name"`
	Resources map[string]string `json:"resources"`
}

// toPod turns the request into the pod to admit, or says which field is wrong (with an HTTP status).
func (r *admitRequest) toPod(ctx context.Context, client kubernetes.Interface, nodeName string) (*v1.Pod, int, error) {
	forms := 0
	if r.Pod != nil {
		forms++
	}
	if r.FromAPI {
		forms++
	}
	if len(r.Containers) > 0 || len(r.InitContainers) > 0 {
		forms++
	}
	if forms != 1 {
		return nil, http.StatusBadRequest, fmt.Errorf("give exactly one of: pod, from_api (with namespace and name), containers")
	}
	switch {
	case r.Pod != nil:
		pod := r.Pod.DeepCopy()
		if pod.Namespace == "" {
			pod.Namespace = metav1.NamespaceDefault
		}
		if pod.Name == "" {
			return nil, http.StatusBadRequest, fmt.Errorf("pod.metadata.name: required")
		}
		if pod.UID == "" {
			pod.UID = uuid.NewUUID()
		}
		if len(pod.Spec.Containers) == 0 {
			return nil, http.StatusBadRequest, fmt.Errorf("pod.spec.containers: at least one container is required")
		}
		return pod, 0, nil
	case r.FromAPI:
		if client == nil {
			return nil, http.StatusBadRequest, fmt.Errorf("from_api: the harness was started without --kubeconfig")
		}
		ns := r.Namespace
		if ns == "" {
			ns = metav1.NamespaceDefault
		}
		if r.Name == "" {
			return nil, http.StatusBadRequest, fmt.Errorf("name: required with from_api")
		}
		pod, err := client.CoreV1().Pods(ns).Get(ctx, r.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, http.StatusNotFound, fmt.Errorf("pod %s/%s not found in kube-apiserver", ns, r.Name)
		}
		if err != nil {
			return nil, http.StatusBadGateway, fmt.Errorf("get pod %s/%s: %w", ns, r.Name, err)
		}
		if nodeName != "" && pod.Spec.NodeName != nodeName {
			return nil, http.StatusUnprocessableEntity, fmt.Errorf("pod %s/%s is bound to node %q, not to this kubelet's node %q", ns, r.Name, pod.Spec.NodeName, nodeName)
		}
		return pod, 0, nil
	}

	ns := r.Namespace
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return nil, http.StatusBadRequest, fmt.Errorf("namespace %q: %s", ns, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(r.Name); len(errs) > 0 {
		return nil, http.StatusBadRequest, fmt.Errorf("name %q: %s", r.Name, strings.Join(errs, "; "))
	}
	uid := types.UID(r.UID)
	if uid == "" {
		uid = uuid.NewUUID()
	}
	pod := &v1.Pod{
		TypeMeta:   metav1.TypeMeta{Kind: "Pod", APIVersion: "v1"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: r.Name, UID: uid},
		Spec:       v1.PodSpec{NodeName: nodeName},
	}
	if len(r.Containers) == 0 {
		return nil, http.StatusBadRequest, fmt.Errorf("containers: at least one container is required")
	}
	seen := map[string]bool{}
	build := func(field string, reqs []containerRequest) ([]v1.Container, error) {
		var out []v1.Container
		for i, c := range reqs {
			if errs := validation.IsDNS1123Label(c.Name); len(errs) > 0 {
				return nil, fmt.Errorf("%s[%d].name %q: %s", field, i, c.Name, strings.Join(errs, "; "))
			}
			if seen[c.Name] {
				return nil, fmt.Errorf("%s[%d].name %q: duplicate container name", field, i, c.Name)
			}
			seen[c.Name] = true
			list := v1.ResourceList{}
			for name, qs := range c.Resources {
				q, err := resource.ParseQuantity(qs)
				if err != nil {
					return nil, fmt.Errorf("%s[%d].resources[%q]: %q is not a quantity: %v", field, i, name, qs, err)
				}
				if q.Sign() <= 0 || q.MilliValue()%1000 != 0 {
					return nil, fmt.Errorf("%s[%d].resources[%q]: %q must be a positive whole number", field, i, name, qs)
				}
				list[v1.ResourceName(name)] = q
			}
			out = append(out, v1.Container{
				Name:      c.Name,
				Image:     "harness.invalid/none",
				Resources: v1.ResourceRequirements{Requests: list, Limits: list.DeepCopy()},
			})
		}
		return out, nil
	}
	var err error
	if pod.Spec.InitContainers, err = build("init_containers", r.InitContainers); err != nil {
		return nil, http.StatusBadRequest, err
	}
	if pod.Spec.Containers, err = build("containers", r.Containers); err != nil {
		return nil, http.StatusBadRequest, err
	}
	return pod, 0, nil
}
