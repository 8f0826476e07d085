// Command franz drives a Skald server with franz-go (kgo with its defaults, and kadm) and prints
// one JSON summary; tests/interop_go.rs compares it exactly.
//
// Usage: franz BOOTSTRAP TOPIC GROUP BASE_TIMESTAMP_MS first|second
//
// "first": kadm creates TOPIC (2 partitions; again, which must fail); one kgo client per
// compression codec, every producer setting at its default (idempotent, acks=all), sends 10 keyed
// records with headers and explicit timestamps each, record i to partition i % 2; a group
// consumer reads them all, commits {p0: 10, p1: 5}, and kadm describes the group while it is the
// member. The test then restarts the server.
// "second": a new group member must resume exactly at the commit and commits what it read; kadm
// fetches the group's offsets, describes and lists groups, lists offsets, deletes records and
// lists brokers. Timestamps are printed relative to BASE_TIMESTAMP_MS.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
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
	if len(os.Args) != 6 {
		fail(fmt.Errorf("usage: franz BOOTSTRAP TOPIC GROUP BASE_TIMESTAMP_MS first|second"))
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
	fmt.Fprintln(os.Stderr, "franz:", err)
	os.Exit(1)
}

func (c *check) client(opts ...kgo.Opt) (*kgo.Client, error) {
	return kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.bootstrap)}, opts...)...)
}

func (c *check) first(ctx context.Context) error {
	cl, err := c.client()
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for _, key := range []string{"create", "create_again"} {
		resp, err := adm.CreateTopic(ctx, partitions, 1, nil, c.topic)
		if err != nil && resp.Err == nil {
			return err
		}
		c.summary[key] = errName(resp.Err)
	}

	produced, err := c.produce(ctx)
	if err != nil {
		return err
	}
	c.summary["produced"] = produced

	consumer, err := c.groupConsumer("franz-a")
	if err != nil {
		return err
	}
	defer consumer.Close()
	consumed, err := c.poll(ctx, consumer, len(codecs)*perCodec)
	if err != nil {
		return err
	}
	c.summary["consumed_a"] = consumed
	offsets := map[string]map[int32]kgo.EpochOffset{c.topic: {}}
	for p, o := range commit {
		offsets[c.topic][p] = kgo.EpochOffset{Epoch: -1, Offset: o}
	}
	var commitErr error
	consumer.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		commitErr = err
		if err != nil {
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if e := kerr.ErrorForCode(p.ErrorCode); e != nil && commitErr == nil {
					commitErr = fmt.Errorf("commit %s-%d: %w", t.Topic, p.Partition, e)
				}
			}
		}
	})
	if commitErr != nil {
		return commitErr
	}
	if c.summary["committed_a"], err = c.groupOffsets(ctx, adm); err != nil {
		return err
	}
	if c.summary["group_with_a"], err = c.describeGroup(ctx, adm); err != nil {
		return err
	}
	return nil
}

func (c *check) second(ctx context.Context) error {
	cl, err := c.client()
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	if c.summary["group_after_restart"], err = c.describeGroup(ctx, adm); err != nil {
		return err
	}

	consumer, err := c.groupConsumer("franz-b")
	if err != nil {
		return err
	}
	remaining := len(codecs)*perCodec - int(commit[0]+commit[1])
	consumed, err := c.poll(ctx, consumer, remaining)
	if err != nil {
		consumer.Close()
		return err
	}
	c.summary["consumed_b"] = consumed
	if err := consumer.CommitUncommittedOffsets(ctx); err != nil {
		consumer.Close()
		return err
	}
	consumer.Close() // leaves the group

	if c.summary["group_offsets"], err = c.groupOffsets(ctx, adm); err != nil {
		return err
	}
	if c.summary["group_after_b"], err = c.describeGroup(ctx, adm); err != nil {
		return err
	}
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		return err
	}
	groups := [][]string{}
	for _, g := range listed.Sorted() {
		groups = append(groups, []string{g.Group, g.ProtocolType, g.State})
	}
	c.summary["groups"] = groups

	if c.summary["list_offsets"], err = c.listOffsets(ctx, adm); err != nil {
		return err
	}
	deleted, err := adm.DeleteRecords(ctx, kadm.Offsets{c.topic: {0: kadm.Offset{Topic: c.topic, Partition: 0, At: 5}}})
	if err != nil {
		return err
	}
	d, _ := deleted.Lookup(c.topic, 0)
	c.summary["delete_records"] = []any{d.LowWatermark, errName(d.Err)}
	if c.summary["list_offsets_after_delete"], err = c.listOffsets(ctx, adm); err != nil {
		return err
	}
	brokers, err := adm.ListBrokers(ctx)
	if err != nil {
		return err
	}
	c.summary["brokers"] = brokers.NodeIDs()
	return nil
}

// produce sends the records of codec k as k*perCodec .. (k+1)*perCodec-1 from one client per
// codec; result i is record i's [partition, offset, relative timestamp].
func (c *check) produce(ctx context.Context) ([][]int64, error) {
	produced := make([][]int64, len(codecs)*perCodec)
	for k, name := range codecs {
		codec := map[string]kgo.CompressionCodec{
			"none": kgo.NoCompression(), "gzip": kgo.GzipCompression(), "snappy": kgo.SnappyCompression(),
			"lz4": kgo.Lz4Compression(), "zstd": kgo.ZstdCompression(),
		}[name]
		producer, err := c.client(kgo.ProducerBatchCompression(codec), kgo.RecordPartitioner(kgo.ManualPartitioner()))
		if err != nil {
			return nil, err
		}
		var records []*kgo.Record
		for i := k * perCodec; i < (k+1)*perCodec; i++ {
			records = append(records, &kgo.Record{
				Topic:     c.topic,
				Partition: int32(i % partitions),
				Key:       []byte(fmt.Sprintf("key-%d", i)),
				Value:     []byte(fmt.Sprintf("value-%d", i)),
				Headers: []kgo.RecordHeader{
					{Key: "codec", Value: []byte(name)},
					{Key: "seq", Value: []byte(strconv.Itoa(i))},
				},
				Timestamp: time.UnixMilli(c.base + int64(i)*1000),
			})
		}
		results := producer.ProduceSync(ctx, records...)
		producer.Close()
		for _, r := range results {
			if r.Err != nil {
				return nil, fmt.Errorf("produce (%s): %w", name, r.Err)
			}
			i, err := strconv.Atoi(string(r.Record.Key[len("key-"):]))
			if err != nil {
				return nil, err
			}
			produced[i] = []int64{int64(r.Record.Partition), r.Record.Offset, r.Record.Timestamp.UnixMilli() - c.base}
		}
	}
	return produced, nil
}

func (c *check) groupConsumer(clientID string) (*kgo.Client, error) {
	return c.client(
		kgo.ClientID(clientID),
		kgo.ConsumerGroup(c.group),
		kgo.ConsumeTopics(c.topic),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
}

// poll reads until count records arrived; each as [partition, offset, relative timestamp, key,
// value, [[header key, value], ...]], sorted by partition and offset.
func (c *check) poll(ctx context.Context, cl *kgo.Client, count int) ([][]any, error) {
	var records [][]any
	for len(records) < count {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("polled %d of %d records: %w", len(records), count, err)
		}
		if errs := fetches.Errors(); len(errs) > 0 {
			return nil, fmt.Errorf("fetch: %v", errs[0].Err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			headers := [][]string{}
			for _, h := range r.Headers {
				headers = append(headers, []string{h.Key, string(h.Value)})
			}
			records = append(records, []any{r.Partition, r.Offset, r.Timestamp.UnixMilli() - c.base, string(r.Key), string(r.Value), headers})
		})
	}
	sort.Slice(records, func(i, j int) bool {
		if records[i][0].(int32) != records[j][0].(int32) {
			return records[i][0].(int32) < records[j][0].(int32)
		}
		return records[i][1].(int64) < records[j][1].(int64)
	})
	return records, nil
}

func (c *check) describeGroup(ctx context.Context, adm *kadm.Client) (map[string]any, error) {
	described, err := adm.DescribeGroups(ctx, c.group)
	if err != nil {
		return nil, err
	}
	g, ok := described[c.group]
	if !ok || g.Err != nil {
		return nil, fmt.Errorf("describe group %s: %v", c.group, g.Err)
	}
	members := [][]any{}
	for _, m := range g.Members {
		assigned := []string{}
		if a, ok := m.Assigned.AsConsumer(); ok {
			for _, t := range a.Topics {
				for _, p := range t.Partitions {
					assigned = append(assigned, fmt.Sprintf("%s-%d", t.Topic, p))
				}
			}
		}
		sort.Strings(assigned)
		members = append(members, []any{m.ClientID, assigned})
	}
	return map[string]any{
		"state": g.State, "protocol_type": g.ProtocolType, "protocol": g.Protocol,
		"members": members, "coordinator": g.Coordinator.NodeID,
	}, nil
}

// groupOffsets is what the group has committed, per partition, as OffsetFetch answers.
func (c *check) groupOffsets(ctx context.Context, adm *kadm.Client) (map[string]int64, error) {
	fetched, err := adm.FetchOffsets(ctx, c.group)
	if err != nil {
		return nil, err
	}
	if err := fetched.Error(); err != nil {
		return nil, err
	}
	out := map[string]int64{}
	fetched.Each(func(o kadm.OffsetResponse) { out[fmt.Sprintf("%s-%d", o.Topic, o.Partition)] = o.At })
	return out, nil
}

func (c *check) listOffsets(ctx context.Context, adm *kadm.Client) (map[string][]int64, error) {
	out := map[string][]int64{}
	lookups := map[string]func() (kadm.ListedOffsets, error){
		"earliest": func() (kadm.ListedOffsets, error) { return adm.ListStartOffsets(ctx, c.topic) },
		"latest":   func() (kadm.ListedOffsets, error) { return adm.ListEndOffsets(ctx, c.topic) },
		"at_5000":  func() (kadm.ListedOffsets, error) { return adm.ListOffsetsAfterMilli(ctx, c.base+5000, c.topic) },
	}
	for name, lookup := range lookups {
		listed, err := lookup()
		if err != nil {
			return nil, err
		}
		if err := listed.Error(); err != nil {
			return nil, fmt.Errorf("list offsets %s: %w", name, err)
		}
		for p := int32(0); p < partitions; p++ {
			o, _ := listed.Lookup(c.topic, p)
			out[name] = append(out[name], o.Offset)
		}
	}
	return out, nil
}

// errName is "ok" or the Kafka error's name (franz-go's kerr errors print as their name first).
func errName(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
