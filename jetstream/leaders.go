package jetstream

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// leaseStream is the stream behind the lease bucket.
const leaseStream = "KV_" + LeaseBucket

// StepDownFrom asks the stream SNIPER and the lease bucket to move their
// leader off server, if it leads them, and returns the streams it asked.
//
// The active instance of an embedded cluster calls it for its own server:
// a crash of its machine then loses a follower of each, not their leader,
// and the standby that takes over waits for the lease's TTL only, not
// also for raft to notice the dead leader and elect another (4-9 s in
// nats-server, which a deployment cannot tune).
func (l *Log) StepDownFrom(ctx context.Context, server string) ([]string, error) {
	var moved []string
	for _, name := range []string{StreamName, leaseStream} {
		stream, err := l.js.Stream(ctx, name)
		if err != nil {
			return moved, fmt.Errorf("stream %s: %w", name, err)
		}
		info, err := stream.Info(ctx)
		if err != nil {
			return moved, fmt.Errorf("stream %s info: %w", name, err)
		}
		if info.Cluster == nil || info.Cluster.Leader != server || len(info.Cluster.Replicas) == 0 {
			continue
		}
		res, err := l.nc.RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN."+name, nil)
		if err != nil {
			return moved, fmt.Errorf("stream %s leader step-down: %w", name, err)
		}
		var body struct {
			Success bool                `json:"success"`
			Error   *jetstream.APIError `json:"error"`
		}
		if err := json.Unmarshal(res.Data, &body); err != nil {
			return moved, fmt.Errorf("stream %s leader step-down: %w", name, err)
		}
		if body.Error != nil {
			return moved, fmt.Errorf("stream %s leader step-down: %w", name, body.Error)
		}
		moved = append(moved, name)
	}
	return moved, nil
}
