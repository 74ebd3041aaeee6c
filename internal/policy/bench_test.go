package policy

import (
	"math/rand/v2"
	"testing"
)

// BenchmarkDecide1000 decides random requests against 1,000 random
// policies over 50 targets (named targets, label selectors, wildcards,
// reason patterns, one in eight with a CEL condition).
func BenchmarkDecide1000(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	ps, targets := randomPolicies(r, 1000)
	s, err := Compile(ps, targets)
	if err != nil {
		b.Fatal(err)
	}
	ins := make([]Input, 1024)
	for i := range ins {
		ins[i] = randomInput(r, targets)
	}
	b.Run("decide", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			s.Decide(ins[i%len(ins)])
			i++
		}
	})
	b.Run("explain", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			in := ins[i%len(ins)]
			in.Explain = true
			s.Decide(in)
			i++
		}
	})
}

// BenchmarkCompile1000 compiles 1,000 policies, as a configuration reload does.
func BenchmarkCompile1000(b *testing.B) {
	ps, targets := randomPolicies(rand.New(rand.NewPCG(3, 4)), 1000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(ps, targets); err != nil {
			b.Fatal(err)
		}
	}
}
