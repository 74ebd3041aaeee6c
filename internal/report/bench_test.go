package report

import (
	"io"
	"testing"
)

func BenchmarkBuild(b *testing.B) {
	in := manyLeases(10000)
	b.ReportAllocs()
	for b.Loop() {
		Build(in)
	}
}

func BenchmarkWrite(b *testing.B) {
	r := Build(manyLeases(10000))
	for _, f := range []struct {
		name  string
		write func(io.Writer) error
	}{
		{"json", r.WriteJSON}, {"csv", r.WriteCSV}, {"table", r.WriteTable}, {"html", r.WriteHTML},
	} {
		b.Run(f.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := f.write(io.Discard); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
