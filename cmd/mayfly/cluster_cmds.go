package main

import (
	"strings"
	"time"

	"github.com/mayflyhq/mayfly/internal/cluster"
)

// cmdCluster lists the replicas sharing the server's store (admins).
func cmdCluster(e *env, args []string) error {
	f := newFlags(e, "cluster", true)
	c, err := f.start(e, args, 0)
	if err != nil {
		return err
	}
	var st cluster.Status
	if err := c.Do(e.ctx, "GET", "/v1/cluster", nil, nil, &st); err != nil {
		return err
	}
	if f.json() {
		return e.printJSON(st)
	}
	var rows [][]string
	for _, r := range st.Replicas {
		id := r.ID
		if id == st.Self {
			id += " (this)"
		}
		state := "alive"
		if !r.Alive {
			state = "silent"
		}
		leads := strings.Join(r.Leads, ",")
		if leads == "" {
			leads = "-"
		}
		rows = append(rows, []string{id, r.Address, r.Version, state,
			r.LastSeen.Local().Format(time.DateTime), leads})
	}
	e.table("REPLICA\tADDRESS\tVERSION\tSTATE\tLAST HEARTBEAT\tLEADS", rows)
	return nil
}
