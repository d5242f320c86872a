package foundation

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestHelmTemplateAppliesServerSide checks the pinned helm: a chart it creates lints clean, renders, and
// the rendered objects pass the API server's own validation and admission (server-side dry run).
func TestHelmTemplateAppliesServerSide(t *testing.T) {
	bin := mustEnv(t, "TESSERA_KUBE_BIN")
	kubeconfig := mustEnv(t, "TESSERA_KUBECONFIG")
	chart := filepath.Join(t.TempDir(), "foundation-chart")
	run := func(stdin []byte, name string, args ...string) []byte {
		t.Helper()
		cmd := exec.Command(filepath.Join(bin, name), args...)
		cmd.Stdin = bytes.NewReader(stdin)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, out, stderr.String())
		}
		return out
	}
	run(nil, "helm", "create", chart)
	run(nil, "helm", "lint", "--strict", chart)
	manifest := run(nil, "helm", "template", "foundation-"+suffix(t), chart, "--namespace", "default")
	for _, kind := range []string{"kind: Deployment", "kind: Service", "kind: ServiceAccount"} {
		if !bytes.Contains(manifest, []byte(kind)) {
			t.Fatalf("helm template output lacks %q:\n%s", kind, manifest)
		}
	}
	out := run(manifest, "kubectl", "--kubeconfig", kubeconfig, "apply", "--dry-run=server", "-f", "-")
	for _, want := range []string{"deployment.apps/", "service/", "serviceaccount/"} {
		if !bytes.Contains(out, []byte(want)) || !bytes.Contains(out, []byte("(server dry run)")) {
			t.Fatalf("kubectl apply --dry-run=server did not accept %s:\n%s", want, out)
		}
	}
}
