// Package k8s holds Strata's Kubernetes manifests; its test validates them
// without a cluster.
//
// No cluster runs in CI, and no schema validator (kubeconform) has its
// JSON schemas here: they come from a download this machine cannot make.
// So every manifest is decoded strictly into the Kubernetes API's own Go
// types (k8s.io/api, the types the API server decodes into), where an
// unknown or misspelt field, a wrong type or a duplicate key fails; then
// what the types cannot say is checked: each Deployment has a headless
// Service on its pods and ports, probes run grpc-health-probe on the
// serving port, every container states its resource requests, and what
// the pods reference (config keys, volumes) exists.
package k8s

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// object is a decoded manifest and where it came from.
type object struct {
	where string // file:document
	meta  metav1.ObjectMeta
	obj   any
}

// kinds are the kinds the manifests may hold, by apiVersion and kind.
var kinds = map[string]func() any{
	"v1/Namespace":       func() any { return &corev1.Namespace{} },
	"v1/ConfigMap":       func() any { return &corev1.ConfigMap{} },
	"v1/Service":         func() any { return &corev1.Service{} },
	"apps/v1/Deployment": func() any { return &appsv1.Deployment{} },
}

func load(t *testing.T) []object {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	var out []object
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for n := 1; ; n++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: document %d: %v", f, n, err)
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			where := fmt.Sprintf("%s:%d", f, n)
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			newObj, ok := kinds[tm.APIVersion+"/"+tm.Kind]
			if !ok {
				t.Errorf("%s: kind %s/%s is not one the manifests use", where, tm.APIVersion, tm.Kind)
				continue
			}
			obj := newObj()
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Errorf("%s: %s does not decode strictly: %v", where, tm.Kind, err)
				continue
			}
			var m struct {
				Metadata metav1.ObjectMeta `json:"metadata"`
			}
			_ = yaml.Unmarshal(doc, &m)
			out = append(out, object{where: where, meta: m.Metadata, obj: obj})
		}
	}
	return out
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for line := range strings.SplitSeq(string(doc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.Bytes()
}

func TestManifests(t *testing.T) {
	objs := load(t)
	services := map[string]*corev1.Service{}
	configs := map[string]*corev1.ConfigMap{}
	var deployments []object
	for _, o := range objs {
		for _, msg := range validation.IsDNS1123Label(o.meta.Name) {
			t.Errorf("%s: name %q: %s", o.where, o.meta.Name, msg)
		}
		switch v := o.obj.(type) {
		case *corev1.Namespace:
			continue
		case *corev1.Service:
			services[v.Name] = v
		case *corev1.ConfigMap:
			configs[v.Name] = v
		case *appsv1.Deployment:
			deployments = append(deployments, o)
		}
		if o.meta.Namespace != "strata" {
			t.Errorf("%s: %s is in namespace %q, want strata", o.where, o.meta.Name, o.meta.Namespace)
		}
	}
	want := []string{"blobstore", "builder", "metadata", "registry"}
	var got []string
	for _, o := range deployments {
		got = append(got, o.meta.Name)
		checkDeployment(t, o.where, o.obj.(*appsv1.Deployment), services, configs)
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("Deployments %v, want %v", got, want)
	}
}

func checkDeployment(t *testing.T, where string, d *appsv1.Deployment, services map[string]*corev1.Service, configs map[string]*corev1.ConfigMap) {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() {
		t.Errorf("%s: Deployment %s: selector %v: %v", where, d.Name, d.Spec.Selector, err)
		return
	}
	podLabels := labels.Set(d.Spec.Template.Labels)
	if !sel.Matches(podLabels) {
		t.Errorf("%s: Deployment %s: its selector does not match its pods' labels %v", where, d.Name, podLabels)
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("%s: Deployment %s: want 2 or more replicas", where, d.Name)
	}
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%s: Deployment %s: %d containers, want 1", where, d.Name, len(pod.Containers))
	}
	c := pod.Containers[0]
	// The serving port: grpc, or https for the registry, which HTTP
	// clients reach through one address.
	portName := "grpc"
	if d.Name == "registry" {
		portName = "https"
	}
	grpcPort := int32(0)
	for _, p := range c.Ports {
		if p.Name == portName {
			grpcPort = p.ContainerPort
		}
	}
	if grpcPort == 0 {
		t.Errorf("%s: %s: no container port named %s", where, d.Name, portName)
	}

	// A headless Service of the same name on these pods and that port.
	svc, ok := services[d.Name]
	switch {
	case !ok:
		t.Errorf("%s: Deployment %s has no Service", where, d.Name)
	case (svc.Spec.ClusterIP == corev1.ClusterIPNone) != (portName == "grpc"):
		t.Errorf("Service %s: clusterIP %q; want a headless Service exactly for gRPC services, whose clients balance over the replicas themselves",
			svc.Name, svc.Spec.ClusterIP)
	case !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) || len(svc.Spec.Selector) == 0:
		t.Errorf("Service %s selects %v, not the pods of Deployment %s (%v)", svc.Name, svc.Spec.Selector, d.Name, podLabels)
	case len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != grpcPort || svc.Spec.Ports[0].TargetPort.String() != portName:
		t.Errorf("Service %s ports %v, want %d to the container port %s", svc.Name, svc.Spec.Ports, grpcPort, portName)
	}

	// Probes: ready while gRPC health is SERVING, alive while listening.
	addr := fmt.Sprintf("-addr=127.0.0.1:%d", grpcPort)
	if p := c.ReadinessProbe; p == nil || p.Exec == nil || len(p.Exec.Command) == 0 ||
		p.Exec.Command[0] != "/usr/local/bin/grpc-health-probe" || !slices.Contains(p.Exec.Command, addr) {
		t.Errorf("%s: %s: readiness probe %v, want grpc-health-probe %s", where, d.Name, p, addr)
	}
	if p := c.LivenessProbe; p == nil || p.TCPSocket == nil || p.TCPSocket.Port.String() != portName {
		t.Errorf("%s: %s: liveness probe %v, want a TCP check of the grpc port", where, d.Name, p)
	}

	// Resources stated.
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if q, ok := c.Resources.Requests[r]; !ok || q.IsZero() {
			t.Errorf("%s: %s requests no %s", where, d.Name, r)
		}
	}
	if q, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok || q.IsZero() {
		t.Errorf("%s: %s has no memory limit", where, d.Name)
	}

	// What the pod references exists.
	volumes := map[string]bool{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = true
	}
	for _, m := range c.VolumeMounts {
		if !volumes[m.Name] {
			t.Errorf("%s: %s mounts volume %q, which the pod does not have", where, d.Name, m.Name)
		}
	}
	for _, e := range c.Env {
		if !strings.HasPrefix(e.Name, "STRATA_") {
			t.Errorf("%s: %s: variable %s is not one of Strata's (STRATA_…)", where, d.Name, e.Name)
		}
		if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
			ref := e.ValueFrom.ConfigMapKeyRef
			if cm, ok := configs[ref.Name]; !ok {
				t.Errorf("%s: %s: %s names ConfigMap %s, which no manifest makes", where, d.Name, e.Name, ref.Name)
			} else if _, ok := cm.Data[ref.Key]; !ok {
				t.Errorf("%s: %s: %s names key %s of ConfigMap %s, which it lacks", where, d.Name, e.Name, ref.Key, ref.Name)
			}
		}
	}

	// Only the builder runs as root; the others drop every capability.
	sc := c.SecurityContext
	if d.Name == "builder" {
		if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Add, "SYS_ADMIN") {
			t.Errorf("%s: the builder's privileges are not spelled out: %v", where, sc)
		}
		return
	}
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Errorf("%s: %s may run as root", where, d.Name)
	}
	if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("%s: %s keeps capabilities: %v", where, d.Name, sc)
	}
}
