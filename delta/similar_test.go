package delta

import "testing"

func TestSiblingHelps(t *testing.T) {
	twin := text(41, 400000)
	cur := edit(41, twin)
	cur = append(cur, text(42, 100000)...) // new text...
	related := append(text(43, 200000), text(42, 100000)...)
	unrelated := text(44, 300000)
	if !siblingHelps(twin, cur, related) {
		t.Error("a sibling holding the new text was refused")
	}
	if siblingHelps(twin, cur, unrelated) {
		t.Error("an unrelated sibling was accepted")
	}
	if siblingHelps(twin, twin, related) {
		t.Error("a sibling was accepted for a file with no new text")
	}
}
