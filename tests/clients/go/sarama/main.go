// Command sarama drives a Skald server with IBM/sarama and prints one JSON summary;
// tests/interop_go.rs compares it exactly.
//
// Usage: sarama BOOTSTRAP TOPIC GROUP BASE_TIMESTAMP_MS first|second
//
// "first": the ClusterAdmin creates TOPIC (2 partitions; again, which must fail); one
// SyncProducer per compression codec (sarama's defaults, but for the manual partitioner and
// returning successes, which SyncProducer needs) sends 10 keyed records with headers and explicit
// timestamps each, record i to partition i % 2; a consumer group member reads them all, commits
// {p0: 10, p1: 5} and the admin describes the group while it is the member. The test then
// restarts the server.
// "second": a new member must resume exactly at the commit and commits what it read; the admin
// lists the group's offsets, describes and lists groups, deletes records and describes the
// cluster. Timestamps are printed relative to BASE_TIMESTAMP_MS. SARAMA_LOG=1 sends sarama's own
// log to stderr.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/IBM/sarama"
)

const (
	partitions = 2
	perCodec   = 10
)

var (
	codecs = []string{"none", "gzip", "snappy", "lz4", "zstd"}
	commit = map[int32]int64{0: 10, 1: 5}
)

type check struct {
	bootstrap, topic, group string
	base                    int64
	summary                 map[string]any
}

func main() {
	if os.Getenv("SARAMA_LOG") != "" {
		sarama.Logger = log.New(os.Stderr, "[sarama] ", log.LstdFlags)
	}
	if len(os.Args) != 6 {
		fail(fmt.Errorf("usage: sarama BOOTSTRAP TOPIC GROUP BASE_TIMESTAMP_MS first|second"))
	}
	base, err := strconv.ParseInt(os.Args[4], 10, 64)
	if err != nil {
		fail(err)
	}
	c := &check{os.Args[1], os.Args[2], os.Args[3], base, map[string]any{}}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	switch os.Args[5] {
	case "first":
		err = c.first(ctx)
	case "second":
		err = c.second(ctx)
	default:
		err = fmt.Errorf("phase %q", os.Args[5])
	}
	if err != nil {
		fail(err)
	}
	out, err := json.Marshal(c.summary)
	if err != nil {
		fail(err)
	}
	fmt.Println(string(out))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "sarama:", err)
	os.Exit(1)
}

func (c *check) first(ctx context.Context) error {
	admin, err := sarama.NewClusterAdmin([]string{c.bootstrap}, sarama.NewConfig())
	if err != nil {
		return err
	}
	defer admin.Close()
	detail := &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}
	c.summary["create"] = errName(admin.CreateTopic(c.topic, detail, false))
	c.summary["create_again"] = errName(admin.CreateTopic(c.topic, detail, false))

	produced, err := c.produce()
	if err != nil {
		return err
	}
	c.summary["produced"] = produced

	records, err := c.consume(ctx, "sarama-a", len(codecs)*perCodec, false, func(session sarama.ConsumerGroupSession) error {
		// Nothing was marked as it went, so these are the offsets to commit.
		for p, o := range commit {
			session.MarkOffset(c.topic, p, o, "")
		}
		session.Commit()
		// The admin describes the group while this member is in it.
		described, err := c.describeGroup(admin)
		c.summary["group_with_a"] = described
		return err
	})
	if err != nil {
		return err
	}
	c.summary["consumed_a"] = records
	c.summary["committed_a"], err = c.groupOffsets(admin)
	return err
}

func (c *check) second(ctx context.Context) error {
	admin, err := sarama.NewClusterAdmin([]string{c.bootstrap}, sarama.NewConfig())
	if err != nil {
		return err
	}
	defer admin.Close()
	if c.summary["group_after_restart"], err = c.describeGroup(admin); err != nil {
		return err
	}
	remaining := len(codecs)*perCodec - int(commit[0]+commit[1])
	records, err := c.consume(ctx, "sarama-b", remaining, true, func(session sarama.ConsumerGroupSession) error {
		session.Commit()
		return nil
	})
	if err != nil {
		return err
	}
	c.summary["consumed_b"] = records
	if c.summary["group_offsets"], err = c.groupOffsets(admin); err != nil {
		return err
	}
	if c.summary["group_after_b"], err = c.describeGroup(admin); err != nil {
		return err
	}
	listed, err := admin.ListConsumerGroups()
	if err != nil {
		return err
	}
	c.summary["groups"] = listed

	c.summary["delete_records"] = errName(admin.DeleteRecords(c.topic, map[int32]int64{0: 5}))
	client, err := sarama.NewClient([]string{c.bootstrap}, sarama.NewConfig())
	if err != nil {
		return err
	}
	defer client.Close()
	offsets := map[string][]int64{}
	for name, at := range map[string]int64{"earliest": sarama.OffsetOldest, "latest": sarama.OffsetNewest, "at_5000": c.base + 5000} {
		for p := int32(0); p < partitions; p++ {
			o, err := client.GetOffset(c.topic, p, at)
			if err != nil {
				return fmt.Errorf("offset %s of partition %d: %w", name, p, err)
			}
			offsets[name] = append(offsets[name], o)
		}
	}
	c.summary["list_offsets_after_delete"] = offsets

	brokers, controller, err := admin.DescribeCluster()
	if err != nil {
		return err
	}
	ids := []int32{}
	for _, b := range brokers {
		ids = append(ids, b.ID())
	}
	c.summary["cluster"] = map[string]any{"brokers": ids, "controller": controller}
	return nil
}

// produce sends the records of codec k as k*perCodec .. (k+1)*perCodec-1 from one producer per
// codec; result i is record i's [partition, offset, relative timestamp].
func (c *check) produce() ([][]int64, error) {
	produced := make([][]int64, len(codecs)*perCodec)
	for k, name := range codecs {
		config := sarama.NewConfig()
		config.Producer.Return.Successes = true
		config.Producer.Partitioner = sarama.NewManualPartitioner
		if err := config.Producer.Compression.UnmarshalText([]byte(name)); err != nil {
			return nil, err
		}
		producer, err := sarama.NewSyncProducer([]string{c.bootstrap}, config)
		if err != nil {
			return nil, err
		}
		var messages []*sarama.ProducerMessage
		for i := k * perCodec; i < (k+1)*perCodec; i++ {
			messages = append(messages, &sarama.ProducerMessage{
				Topic:     c.topic,
				Partition: int32(i % partitions),
				Key:       sarama.StringEncoder(fmt.Sprintf("key-%d", i)),
				Value:     sarama.StringEncoder(fmt.Sprintf("value-%d", i)),
				Headers: []sarama.RecordHeader{
					{Key: []byte("codec"), Value: []byte(name)},
					{Key: []byte("seq"), Value: []byte(strconv.Itoa(i))},
				},
				Timestamp: time.UnixMilli(c.base + int64(i)*1000),
			})
		}
		err = producer.SendMessages(messages)
		producer.Close()
		if err != nil {
			return nil, fmt.Errorf("produce (%s): %w", name, err)
		}
		for n, m := range messages {
			produced[k*perCodec+n] = []int64{int64(m.Partition), m.Offset, m.Timestamp.UnixMilli() - c.base}
		}
	}
	return produced, nil
}

// handler collects records (marking each consumed if `mark`) until it has `want`, then runs
// `done` once with the session.
type handler struct {
	check *check
	want  int
	mark  bool
	done  func(sarama.ConsumerGroupSession) error

	mu      sync.Mutex
	records [][]any
	doneErr error
	over    chan struct{}
}

func (h *handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *handler) ConsumeClaim(session sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for {
		select {
		case m, ok := <-claim.Messages():
			if !ok {
				return nil
			}
			headers := [][]string{}
			for _, hd := range m.Headers {
				headers = append(headers, []string{string(hd.Key), string(hd.Value)})
			}
			if h.mark {
				session.MarkMessage(m, "")
			}
			h.mu.Lock()
			h.records = append(h.records, []any{m.Partition, m.Offset, m.Timestamp.UnixMilli() - h.check.base, string(m.Key), string(m.Value), headers})
			finished := len(h.records) == h.want
			h.mu.Unlock()
			if finished {
				h.doneErr = h.done(session)
				close(h.over)
				return nil
			}
		case <-session.Context().Done():
			return nil
		}
	}
}

// consume joins the group as clientID and reads `want` records; each as [partition, offset,
// relative timestamp, key, value, [[header key, value], ...]], sorted by partition and offset.
func (c *check) consume(ctx context.Context, clientID string, want int, mark bool, done func(sarama.ConsumerGroupSession) error) ([][]any, error) {
	config := sarama.NewConfig()
	config.ClientID = clientID
	config.Consumer.Offsets.Initial = sarama.OffsetOldest
	config.Consumer.Offsets.AutoCommit.Enable = false
	group, err := sarama.NewConsumerGroup([]string{c.bootstrap}, c.group, config)
	if err != nil {
		return nil, err
	}
	h := &handler{check: c, want: want, mark: mark, done: done, over: make(chan struct{})}
	consumeCtx, stop := context.WithCancel(ctx)
	consumed := make(chan error, 1)
	go func() {
		for consumeCtx.Err() == nil {
			if err := group.Consume(consumeCtx, []string{c.topic}, h); err != nil {
				consumed <- err
				return
			}
		}
		consumed <- nil
	}()
	select {
	case <-h.over:
	case err := <-consumed:
		stop()
		group.Close()
		return nil, fmt.Errorf("consume ended before %d records: %v", want, err)
	case <-ctx.Done():
		stop()
		group.Close()
		return nil, fmt.Errorf("read %d of %d records: %w", len(h.records), want, ctx.Err())
	}
	stop()
	<-consumed
	if err := group.Close(); err != nil {
		return nil, err
	}
	if h.doneErr != nil {
		return nil, h.doneErr
	}
	sort.Slice(h.records, func(i, j int) bool {
		if h.records[i][0].(int32) != h.records[j][0].(int32) {
			return h.records[i][0].(int32) < h.records[j][0].(int32)
		}
		return h.records[i][1].(int64) < h.records[j][1].(int64)
	})
	return h.records, nil
}

func (c *check) describeGroup(admin sarama.ClusterAdmin) (map[string]any, error) {
	described, err := admin.DescribeConsumerGroups([]string{c.group})
	if err != nil {
		return nil, err
	}
	if len(described) != 1 || described[0].Err != sarama.ErrNoError {
		return nil, fmt.Errorf("describe group %s: %v", c.group, described)
	}
	g := described[0]
	members := [][]any{}
	for _, m := range g.Members {
		assigned := []string{}
		assignment, err := m.GetMemberAssignment()
		if err != nil {
			return nil, err
		}
		if assignment != nil {
			for t, ps := range assignment.Topics {
				for _, p := range ps {
					assigned = append(assigned, fmt.Sprintf("%s-%d", t, p))
				}
			}
		}
		sort.Strings(assigned)
		members = append(members, []any{m.ClientId, assigned})
	}
	return map[string]any{"state": g.State, "protocol_type": g.ProtocolType, "protocol": g.Protocol, "members": members}, nil
}

func (c *check) groupOffsets(admin sarama.ClusterAdmin) (map[string]int64, error) {
	fetched, err := admin.ListConsumerGroupOffsets(c.group, nil)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	for t, ps := range fetched.Blocks {
		for p, b := range ps {
			if b.Err != sarama.ErrNoError {
				return nil, fmt.Errorf("offset of %s-%d: %w", t, p, b.Err)
			}
			out[fmt.Sprintf("%s-%d", t, p)] = b.Offset
		}
	}
	return out, nil
}

// errName is "ok" or the error's text (sarama's Kafka errors print as kafka server: ...).
func errName(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
