package deploy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/buildgw/buildgw/gateway"
)

// kustomizeRoot is the Kustomize tree, as it is copied into memory for
// rendering.
const kustomizeRoot = "/kubernetes"

// render builds the kustomization dir (relative to kubernetes/) with
// components added, as `kubectl apply -k` would, and returns the YAML.
// The tree is rendered from a copy in memory, so that a kustomization
// adding components can be written beside the overlays.
func render(t testing.TB, dir string, components ...string) []byte {
	t.Helper()
	mem := filesys.MakeFsInMemory()
	err := filepath.WalkDir("kubernetes", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return mem.WriteFile(path.Join("/", filepath.ToSlash(p)), b)
	})
	if err != nil {
		t.Fatal(err)
	}
	target := path.Join(kustomizeRoot, dir)
	if len(components) > 0 {
		target = path.Join(kustomizeRoot, "rendered-by-test")
		k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../" + dir + "]\ncomponents:\n"
		for _, c := range components {
			k += "  - ../" + c + "\n"
		}
		if err := mem.WriteFile(path.Join(target, "kustomization.yaml"), []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(mem, target)
	if err != nil {
		t.Fatalf("kustomize build %s (components %v): %v", dir, components, err)
	}
	b, err := res.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// serviceMonitor is the part of monitoring.coreos.com/v1 ServiceMonitor
// that the component sets (the Prometheus Operator's types are not a
// dependency); unknown fields are errors all the same.
type serviceMonitor struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		NamespaceSelector struct {
			MatchNames []string `json:"matchNames"`
		} `json:"namespaceSelector"`
		Selector  struct{ MatchLabels map[string]string } `json:"selector"`
		Endpoints []struct {
			Port          string `json:"port"`
			Scheme        string `json:"scheme"`
			Path          string `json:"path"`
			Interval      string `json:"interval"`
			Authorization struct {
				Type        string                   `json:"type"`
				Credentials corev1.SecretKeySelector `json:"credentials"`
			} `json:"authorization"`
			TLSConfig struct {
				ServerName string `json:"serverName"`
				CA         struct {
					Secret corev1.SecretKeySelector `json:"secret"`
				} `json:"ca"`
			} `json:"tlsConfig"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// manifests are decoded objects, keyed by namespace/name.
type manifests struct {
	namespaces          map[string]*corev1.Namespace
	serviceAccounts     map[string]*corev1.ServiceAccount
	configMaps          map[string]*corev1.ConfigMap
	secrets             map[string]*corev1.Secret
	claims              map[string]*corev1.PersistentVolumeClaim
	roles               map[string]*rbacv1.Role
	roleBindings        map[string]*rbacv1.RoleBinding
	clusterRoles        map[string]*rbacv1.ClusterRole
	clusterRoleBindings map[string]*rbacv1.ClusterRoleBinding
	networkPolicies     map[string]*networkingv1.NetworkPolicy
	pdbs                map[string]*policyv1.PodDisruptionBudget
	serviceMonitors     map[string]*serviceMonitor
	quotas              map[string]*corev1.ResourceQuota
	deployment          *appsv1.Deployment
	service             *corev1.Service
	// order is every object as it came, for applying them.
	order []any
}

func key(ns, name string) string { return ns + "/" + name }

// decodeManifests decodes every document strictly into its API type.
func decodeManifests(t testing.TB, name string, b []byte) manifests {
	t.Helper()
	m := manifests{
		namespaces: map[string]*corev1.Namespace{}, serviceAccounts: map[string]*corev1.ServiceAccount{},
		configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		claims: map[string]*corev1.PersistentVolumeClaim{}, roles: map[string]*rbacv1.Role{},
		roleBindings: map[string]*rbacv1.RoleBinding{}, clusterRoles: map[string]*rbacv1.ClusterRole{},
		clusterRoleBindings: map[string]*rbacv1.ClusterRoleBinding{}, networkPolicies: map[string]*networkingv1.NetworkPolicy{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, serviceMonitors: map[string]*serviceMonitor{},
		quotas: map[string]*corev1.ResourceQuota{},
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for i := 1; ; i++ {
		var doc map[string]any
		if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s document %d: %v", name, i, err)
		}
		raw, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		apiVersion, _ := doc["apiVersion"].(string)
		k, _ := doc["kind"].(string)
		kind := apiVersion + "/" + k
		var obj any
		switch kind {
		case "v1/Namespace":
			obj = &corev1.Namespace{}
		case "v1/ServiceAccount":
			obj = &corev1.ServiceAccount{}
		case "v1/ConfigMap":
			obj = &corev1.ConfigMap{}
		case "v1/Secret":
			obj = &corev1.Secret{}
		case "v1/PersistentVolumeClaim":
			obj = &corev1.PersistentVolumeClaim{}
		case "v1/Service":
			obj = &corev1.Service{}
		case "v1/ResourceQuota":
			obj = &corev1.ResourceQuota{}
		case "apps/v1/Deployment":
			obj = &appsv1.Deployment{}
		case "rbac.authorization.k8s.io/v1/Role":
			obj = &rbacv1.Role{}
		case "rbac.authorization.k8s.io/v1/RoleBinding":
			obj = &rbacv1.RoleBinding{}
		case "rbac.authorization.k8s.io/v1/ClusterRole":
			obj = &rbacv1.ClusterRole{}
		case "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
			obj = &rbacv1.ClusterRoleBinding{}
		case "networking.k8s.io/v1/NetworkPolicy":
			obj = &networkingv1.NetworkPolicy{}
		case "policy/v1/PodDisruptionBudget":
			obj = &policyv1.PodDisruptionBudget{}
		case "monitoring.coreos.com/v1/ServiceMonitor":
			obj = &serviceMonitor{}
		default:
			t.Fatalf("%s document %d: unexpected kind %s", name, i, kind)
		}
		if err := sigsyaml.UnmarshalStrict(raw, obj); err != nil {
			t.Fatalf("%s document %d (%s): %v", name, i, kind, err)
		}
		m.order = append(m.order, obj)
		switch o := obj.(type) {
		case *corev1.Namespace:
			m.namespaces[o.Name] = o
		case *corev1.ServiceAccount:
			m.serviceAccounts[key(o.Namespace, o.Name)] = o
		case *corev1.ConfigMap:
			m.configMaps[key(o.Namespace, o.Name)] = o
		case *corev1.Secret:
			m.secrets[key(o.Namespace, o.Name)] = o
		case *corev1.PersistentVolumeClaim:
			m.claims[key(o.Namespace, o.Name)] = o
		case *corev1.Service:
			if m.service != nil {
				t.Fatalf("%s: more than one Service", name)
			}
			m.service = o
		case *appsv1.Deployment:
			if m.deployment != nil {
				t.Fatalf("%s: more than one Deployment", name)
			}
			m.deployment = o
		case *rbacv1.Role:
			m.roles[key(o.Namespace, o.Name)] = o
		case *rbacv1.RoleBinding:
			m.roleBindings[key(o.Namespace, o.Name)] = o
		case *rbacv1.ClusterRole:
			m.clusterRoles[o.Name] = o
		case *rbacv1.ClusterRoleBinding:
			m.clusterRoleBindings[o.Name] = o
		case *networkingv1.NetworkPolicy:
			m.networkPolicies[key(o.Namespace, o.Name)] = o
		case *policyv1.PodDisruptionBudget:
			m.pdbs[key(o.Namespace, o.Name)] = o
		case *serviceMonitor:
			m.serviceMonitors[key(o.Metadata.Namespace, o.Metadata.Name)] = o
		case *corev1.ResourceQuota:
			m.quotas[key(o.Namespace, o.Name)] = o
		}
	}
	if m.deployment == nil || m.service == nil || len(m.configMaps) == 0 || len(m.secrets) == 0 {
		t.Fatalf("%s: want a Deployment, a Service, a ConfigMap and Secrets", name)
	}
	return m
}

// decodeConfig decodes the gateway's configuration strictly, as
// gateway.LoadConfig does. Until gateway.Config has the replicated job
// store (store.postgres_dsn_file, another change), that key is taken
// out and returned apart.
func decodeConfig(t testing.TB, name string, raw []byte) (cfg gateway.Config, dsnFile string) {
	t.Helper()
	cfg = gateway.DefaultConfig()
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if !hasYAMLKey(reflect.TypeOf(cfg), "store") && len(doc.Content) == 1 {
		m := doc.Content[0]
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value != "store" {
				continue
			}
			var s struct {
				PostgresDSNFile string `yaml:"postgres_dsn_file"`
			}
			if err := m.Content[i+1].Decode(&s); err != nil {
				t.Fatalf("%s: store: %v", name, err)
			}
			dsnFile = s.PostgresDSNFile
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			break
		}
	}
	b, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("decoding %s = %v, want nil", name, err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if dsnFile == "" {
		dsnFile = storeDSNFile(cfg)
	}
	return cfg, dsnFile
}

// storeDSNFile is cfg's store.postgres_dsn_file, once gateway.Config has
// it.
func storeDSNFile(cfg gateway.Config) string {
	v := reflect.ValueOf(cfg)
	for i := 0; i < v.NumField(); i++ {
		if yamlName(v.Type().Field(i)) != "store" {
			continue
		}
		s := v.Field(i)
		for j := 0; j < s.NumField(); j++ {
			if yamlName(s.Type().Field(j)) == "postgres_dsn_file" {
				return s.Field(j).String()
			}
		}
	}
	return ""
}

func hasYAMLKey(t reflect.Type, name string) bool {
	for i := 0; i < t.NumField(); i++ {
		if yamlName(t.Field(i)) == name {
			return true
		}
	}
	return false
}

func yamlName(f reflect.StructField) string {
	n, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return n
}
