package jetstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"sniper/messages"
)

// DefaultAckWait bounds how long an input handed to a sniper that died
// stays invisible before it is delivered again. Decisions take
// milliseconds, so the wait only matters after a crash, where it is the
// resume delay; a redelivery that overtakes a slow decision is harmless
// (the copy is skipped as already decided).
const DefaultAckWait = 5 * time.Second

// InputConsumerName is the durable consumer feeding one auction's sniper.
func InputConsumerName(item string) string { return "sniper-" + item }

// InputConsumer returns the durable consumer that feeds one auction's
// inputs (commands and auction events) to its sniper. One consumer per
// auction with MaxAckPending 1 is what keeps each auction's inputs in log
// order even across crashes: the server hands out the next input only once
// the previous one is decided and acknowledged, and a redelivery can never
// overtake a newer input.
func (l *Log) InputConsumer(ctx context.Context, item string) (jetstream.Consumer, error) {
	c, err := l.js.CreateOrUpdateConsumer(ctx, StreamName, jetstream.ConsumerConfig{
		Durable:        InputConsumerName(item),
		Description:    "inputs of the sniper on " + item,
		FilterSubjects: messages.InputSubjects(item),
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        l.ackWait,
		MaxAckPending:  1,
		MaxDeliver:     -1,
	})
	if err != nil {
		return nil, fmt.Errorf("input consumer for %s: %w", item, err)
	}
	return c, nil
}

// DeleteInputConsumer removes an auction's consumer once its sniper is
// finished; later inputs stay in the log, undecided, as history.
func (l *Log) DeleteInputConsumer(ctx context.Context, item string) error {
	err := l.js.DeleteConsumer(ctx, StreamName, InputConsumerName(item))
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("delete input consumer for %s: %w", item, err)
	}
	return nil
}

// StartConsumerName is the durable consumer through which the supervisor
// learns about new auctions.
const StartConsumerName = "supervisor"

// StartConsumer returns the durable consumer of all start commands.
func (l *Log) StartConsumer(ctx context.Context) (jetstream.Consumer, error) {
	c, err := l.js.CreateOrUpdateConsumer(ctx, StreamName, jetstream.ConsumerConfig{
		Durable:       StartConsumerName,
		Description:   "start commands: the supervisor spawns a sniper for each",
		FilterSubject: messages.Subject("*", messages.KindCmd, messages.TypeStart),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       l.ackWait,
		MaxDeliver:    -1,
	})
	if err != nil {
		return nil, fmt.Errorf("start consumer: %w", err)
	}
	return c, nil
}

// OutboundConsumerName is the durable consumer of the XMPP outbound bridge.
const OutboundConsumerName = "xmpp-out"

// OutboundConsumer returns the durable consumer of the sniper's requests to
// the auction house (out.join, out.bid; not the bridge's own out.sent
// records). MaxAckPending 1 keeps them in order on the wire (a JOIN before
// its auction's BIDs) and keeps them in the log until sent.
func (l *Log) OutboundConsumer(ctx context.Context) (jetstream.Consumer, error) {
	c, err := l.js.CreateOrUpdateConsumer(ctx, StreamName, jetstream.ConsumerConfig{
		Durable:     OutboundConsumerName,
		Description: "JOIN and BID requests for the XMPP outbound bridge",
		FilterSubjects: []string{
			messages.Subject("*", messages.KindOut, messages.TypeJoin),
			messages.Subject("*", messages.KindOut, messages.TypeBid),
		},
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       l.ackWait,
		MaxAckPending: 1,
		MaxDeliver:    -1,
	})
	if err != nil {
		return nil, fmt.Errorf("outbound consumer: %w", err)
	}
	return c, nil
}

// LastSentSeq returns the out_seq of the last out.sent record on subject,
// 0 if there is none.
func (l *Log) LastSentSeq(ctx context.Context, subject string) (uint64, error) {
	raw, err := l.stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("last sent record on %s: %w", subject, err)
	}
	var rec messages.SentEvent
	if err := json.Unmarshal(raw.Data, &rec); err != nil {
		return 0, fmt.Errorf("decode sent record %d: %w", raw.Sequence, err)
	}
	return rec.OutSeq, nil
}

// ConsumerInfos lists every consumer of the stream, for metrics.
func (l *Log) ConsumerInfos(ctx context.Context) ([]*jetstream.ConsumerInfo, error) {
	lister := l.stream.ListConsumers(ctx)
	var out []*jetstream.ConsumerInfo
	for info := range lister.Info() {
		out = append(out, info)
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("list consumers: %w", err)
	}
	return out, nil
}
