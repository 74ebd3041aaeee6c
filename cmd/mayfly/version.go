package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set at build time, e.g.
//
//	go build -ldflags "-X main.version=1.2.0 -X main.commit=$(git rev-parse HEAD) -X main.buildDate=$(date -u +%FT%TZ)" ./cmd/mayfly
//
// Without them, buildInfo falls back to what the Go toolchain recorded
// (the module version, and the VCS revision and time of a build inside a
// git checkout).
var (
	version   = ""
	commit    = ""
	buildDate = ""
)

// versionInfo is what `mayfly version -o json` prints.
type versionInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	BuildDate string `json:"build_date"`
	Modified  bool   `json:"modified,omitempty"`
	Go        string `json:"go"`
}

// buildInfo returns the version, commit and build date: those set with
// -ldflags, else those of debug.ReadBuildInfo.
func buildInfo() versionInfo {
	v := versionInfo{Version: version, Commit: commit, BuildDate: buildDate, Go: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if v.Commit == "" {
					v.Commit = s.Value
				}
			case "vcs.time":
				if v.BuildDate == "" {
					v.BuildDate = s.Value
				}
			case "vcs.modified":
				v.Modified = s.Value == "true" && commit == ""
			}
		}
	}
	if v.Version == "" {
		v.Version = "dev"
	}
	if v.Commit == "" {
		v.Commit = "unknown"
	}
	if v.BuildDate == "" {
		v.BuildDate = "unknown"
	}
	return v
}

func (v versionInfo) String() string {
	c := v.Commit
	if v.Modified {
		c += "+modified"
	}
	return fmt.Sprintf("mayfly %s (commit %s, built %s, %s)", v.Version, c, v.BuildDate, v.Go)
}

func cmdVersion(e *env, args []string) error {
	f := newFlags(e, "version", true)
	if err := f.parse(e, args); err != nil {
		return err
	}
	if err := f.exactArgs(0); err != nil {
		return err
	}
	if err := f.checkOutput(); err != nil {
		return err
	}
	v := buildInfo()
	if f.json() {
		return e.printJSON(v)
	}
	fmt.Fprintln(e.stdout, v)
	return nil
}
