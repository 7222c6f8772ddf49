package vm

import (
	"reflect"
	"testing"

	"github.com/vmcrypt/vmcrypt/vmdk"
)

func TestMergeLevels(t *testing.T) {
	D, Z := vmdk.Data, vmdk.Zero
	top := []vmdk.Run{{Off: 100, Len: 50, State: D, Level: 0}, {Off: 300, Len: 10, State: Z, Level: 0}}
	mid := []vmdk.Run{{Off: 0, Len: 120, State: D, Level: 1}, {Off: 290, Len: 40, State: D, Level: 1}}
	base := []vmdk.Run{{Off: 0, Len: 1000, State: D, Level: 2}}
	got := mergeLevels([][]vmdk.Run{top, mid, base}, 0, 500)
	want := []vmdk.Run{
		{Off: 0, Len: 100, State: D, Level: 1},
		{Off: 100, Len: 50, State: D, Level: 0},
		{Off: 150, Len: 140, State: D, Level: 2},
		{Off: 290, Len: 10, State: D, Level: 1},
		{Off: 300, Len: 10, State: Z, Level: 0},
		{Off: 310, Len: 20, State: D, Level: 1},
		{Off: 330, Len: 170, State: D, Level: 2},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %v\nwant %v", got, want)
	}
}

func TestExpandRuns(t *testing.T) {
	D, Z := vmdk.Data, vmdk.Zero
	g := int64(100)
	cases := []struct {
		in, want []vmdk.Run
	}{
		{[]vmdk.Run{{Off: 10, Len: 20, State: D}}, []vmdk.Run{{Off: 0, Len: 100, State: D}}},
		{[]vmdk.Run{{Off: 0, Len: 300, State: Z}}, []vmdk.Run{{Off: 0, Len: 300, State: Z}}},
		{[]vmdk.Run{{Off: 50, Len: 300, State: Z}}, []vmdk.Run{{Off: 0, Len: 100, State: D}, {Off: 100, Len: 200, State: Z}, {Off: 300, Len: 100, State: D}}},
		// Data then Zero sharing a grain: the shared grain is Data.
		{[]vmdk.Run{{Off: 0, Len: 150, State: D}, {Off: 150, Len: 250, State: Z}}, []vmdk.Run{{Off: 0, Len: 200, State: D}, {Off: 200, Len: 200, State: Z}}},
		// Zero then Data sharing a grain.
		{[]vmdk.Run{{Off: 0, Len: 250, State: Z}, {Off: 250, Len: 10, State: D}}, []vmdk.Run{{Off: 0, Len: 200, State: Z}, {Off: 200, Len: 100, State: D}}},
		// The last, short grain.
		{[]vmdk.Run{{Off: 420, Len: 30, State: Z}}, []vmdk.Run{{Off: 400, Len: 50, State: D}}},
	}
	for i, c := range cases {
		if got := expandRuns(c.in, g, 450); !reflect.DeepEqual(got, c.want) {
			t.Errorf("case %d: got %v want %v", i, got, c.want)
		}
	}
}
