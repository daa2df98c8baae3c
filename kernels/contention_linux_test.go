package kernels

import "testing"

func TestLoadavgRunningReadsTheFourthField(t *testing.T) {
	cases := map[string]struct {
		in   string
		want int
		ok   bool
	}{
		"quiet":     {"0.14 0.09 0.03 1/78 1296\n", 1, true},
		"busy":      {"10.51 8.20 4.00 12/310 99812\n", 12, true},
		"truncated": {"0.14 0.09 0.03", 0, false},
		"no slash":  {"0.14 0.09 0.03 178 1296", 0, false},
		"garbage":   {"a b c x/y z", 0, false},
		"tabs":      {"1.00\t2.00\t3.00\t17/99\t5", 17, true},
		"empty":     {"", 0, false},
	}
	for name, c := range cases {
		got, ok := loadavgRunning([]byte(c.in))
		if got != c.want || ok != c.ok {
			t.Errorf("%s: loadavgRunning(%q) = %d, %v; want %d, %v", name, c.in, got, ok, c.want, c.ok)
		}
	}
	if q := openRunQueue(); q == nil {
		t.Error("cannot open /proc/loadavg")
	} else {
		q.crowded() // must not panic; the answer depends on the machine
		q.close()
	}
}

func TestLoadavgRunningAllocatesNothing(t *testing.T) {
	b := []byte("0.14 0.09 0.03 3/81 1303\n")
	if a := testing.AllocsPerRun(100, func() { loadavgRunning(b) }); a != 0 {
		t.Errorf("%v allocations per parse", a)
	}
}
