package edge

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"reflect"
	"testing"
)

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
