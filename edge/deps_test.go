package edge

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"os/exec"
	"reflect"
	"strings"
	"testing"
)

// TestDeps keeps the edge an untrusted mirror by construction: it must not
// import the origin (which holds the channel-signing key) and must never
// link code that signs.
func TestDeps(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not in PATH")
	}
	out, err := exec.Command(goBin, "list", "-deps", "github.com/capstan-ota/capstan/edge").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch dep {
		case "github.com/capstan-ota/capstan/origin", "github.com/capstan-ota/capstan/device", "github.com/capstan-ota/capstan/cmd/capstan":
			t.Errorf("edge imports %s", dep)
		}
	}
}

// TestConfigHoldsNoPrivateKey: nothing an edge is configured with can be a
// signing or decryption key.
func TestConfigHoldsNoPrivateKey(t *testing.T) {
	forbidden := []reflect.Type{
		reflect.TypeFor[ed25519.PrivateKey](),
		reflect.TypeFor[*ecdh.PrivateKey](),
		reflect.TypeFor[ecdh.PrivateKey](),
	}
	seen := map[reflect.Type]bool{}
	var walk func(path string, ty reflect.Type)
	walk = func(path string, ty reflect.Type) {
		if seen[ty] {
			return
		}
		seen[ty] = true
		for _, f := range forbidden {
			if ty == f {
				t.Errorf("edge.Config%s is a private key type %s", path, ty)
			}
		}
		switch ty.Kind() {
		case reflect.Struct:
			for i := 0; i < ty.NumField(); i++ {
				walk(path+"."+ty.Field(i).Name, ty.Field(i).Type)
			}
		case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Map:
			walk(path+"[]", ty.Elem())
		}
	}
	walk("", reflect.TypeFor[Config]())
}
