package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
)

// query is one statement with text parameters ($1, $2, ...): either a
// statement prepared on the connection under name (see prepare), or sql,
// parsed and planned on each use, with parameter types the server infers.
type query struct {
	name string
	sql  string
	args []string
}

// rows are the text values of a result; a nil value is SQL NULL.
type rows [][][]byte

// segment is a group of queries that runs as one implicit transaction:
// when one fails, the rest of the segment is skipped and rolled back.
type segment []query

// segmentResult holds the rows of each query of a segment that ran, and
// the server's error when one failed.
type segmentResult struct {
	rows []rows
	err  error
}

// pipeline sends every segment in one write and reads every result: one
// network round trip, however many segments. Each segment ends with a Sync,
// so a failure in one segment does not stop the following ones. A server
// error is reported in its segment's result; any other error (network,
// context) is returned and leaves the connection closed.
func pipeline(ctx context.Context, conn *pgconn.PgConn, segs ...segment) ([]segmentResult, error) {
	p := conn.StartPipeline(ctx)
	if err := send(p, segs...); err != nil {
		return nil, err
	}
	out, err := readSegments(p, len(segs))
	if err != nil {
		return nil, err
	}
	if err := p.Close(); err != nil {
		return nil, err
	}
	return out, nil
}

// send sends segs on p, each ended by a Sync, and flushes them. On error
// the pipeline is closed.
func send(p *pgconn.Pipeline, segs ...segment) error {
	for _, seg := range segs {
		for _, q := range seg {
			params := make([][]byte, len(q.args))
			for i, a := range q.args {
				params[i] = []byte(a)
			}
			if q.name != "" {
				p.SendQueryPrepared(q.name, params, nil, nil)
			} else {
				p.SendQueryParams(q.sql, params, nil, nil, nil)
			}
		}
		p.SendPipelineSync()
	}
	if err := p.Flush(); err != nil {
		p.Close()
		return err
	}
	return nil
}

// readSegments reads the results of n segments sent on p. On error the
// pipeline is closed.
func readSegments(p *pgconn.Pipeline, n int) ([]segmentResult, error) {
	out := make([]segmentResult, n)
	for i := range n {
		res, err := readSegment(p)
		if err != nil {
			p.Close()
			return nil, err
		}
		out[i] = res
	}
	return out, nil
}

// readSegment reads the results of one segment up to its Sync.
func readSegment(p *pgconn.Pipeline) (segmentResult, error) {
	var res segmentResult
	for {
		r, err := p.GetResults()
		if err != nil {
			var pe *pgconn.PgError
			if !errors.As(err, &pe) {
				return res, err
			}
			if res.err == nil {
				res.err = err
			}
			continue
		}
		switch r := r.(type) {
		case *pgconn.PipelineSync:
			return res, nil
		case *pgconn.ResultReader:
			var rs rows
			for r.NextRow() {
				vals := r.Values()
				row := make([][]byte, len(vals))
				for j, v := range vals {
					if v != nil {
						row[j] = append([]byte{}, v...)
					}
				}
				rs = append(rs, row)
			}
			if _, err := r.Close(); err != nil {
				var pe *pgconn.PgError
				if !errors.As(err, &pe) {
					return res, err
				}
				if res.err == nil {
					res.err = err
				}
				continue
			}
			res.rows = append(res.rows, rs)
		case nil:
			return res, errors.New("pipeline ended before its sync")
		default:
			return res, fmt.Errorf("unexpected pipeline result %T", r)
		}
	}
}
