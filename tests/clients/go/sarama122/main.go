// Command sarama122 drives a Skald server with Sarama 1.22 (github.com/Shopify/sarama v1.22.1,
// what Debian ships and Burrow 1.2 is built on), speaking Kafka 1.0's protocol versions, and
// prints one JSON summary; tests/interop_go.rs compares it exactly.
//
// Usage: sarama122 BOOTSTRAP TOPIC GROUP first|second
//
// "first": a SyncProducer sends 10 keyed records, record i to partition i % 2 of TOPIC (created
// by the test), and a consumer group member reads all of them and marks {p0: 3, p1: 2} as the
// group's next offsets; closing the group commits them. The test then restarts the server.
// "second": a new member must resume exactly there, reads the rest and marks it. SARAMA_LOG=1
// sends sarama's own log to stderr.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

const records = 10

var marked = map[int32]int64{0: 3, 1: 2}

func main() {
	if os.Getenv("SARAMA_LOG") != "" {
		sarama.Logger = log.New(os.Stderr, "[sarama] ", log.LstdFlags)
	}
	if len(os.Args) != 5 {
		fail(fmt.Errorf("usage: sarama122 BOOTSTRAP TOPIC GROUP first|second"))
	}
	bootstrap, topic, group, phase := os.Args[1], os.Args[2], os.Args[3], os.Args[4]
	config := sarama.NewConfig()
	config.Version = sarama.V1_0_0_0
	config.ClientID = "sarama-1.22"
	config.Consumer.Offsets.Initial = sarama.OffsetOldest
	config.Consumer.Return.Errors = true
	summary := map[string]any{}
	switch phase {
	case "first":
		produced, err := produce(bootstrap, topic, config)
		if err != nil {
			fail(err)
		}
		summary["produced"] = produced
		consumed, err := consume(bootstrap, topic, group, config, records, marked)
		if err != nil {
			fail(err)
		}
		summary["consumed"] = consumed
	case "second":
		// Everything not marked before: offsets 3 and 4 of partition 0, 2 to 4 of partition 1.
		consumed, err := consume(bootstrap, topic, group, config, 5, map[int32]int64{0: 5, 1: 5})
		if err != nil {
			fail(err)
		}
		summary["consumed"] = consumed
	default:
		fail(fmt.Errorf("phase %q", phase))
	}
	out, err := json.Marshal(summary)
	if err != nil {
		fail(err)
	}
	fmt.Println(string(out))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "sarama122:", err)
	os.Exit(1)
}

// produce sends record i (key-i, value-i) to partition i % 2; returns [partition, offset] each.
func produce(bootstrap, topic string, base *sarama.Config) ([][2]int64, error) {
	config := *base
	config.Producer.Partitioner = sarama.NewManualPartitioner
	config.Producer.Return.Successes = true
	producer, err := sarama.NewSyncProducer([]string{bootstrap}, &config)
	if err != nil {
		return nil, err
	}
	defer producer.Close()
	var produced [][2]int64
	for i := 0; i < records; i++ {
		partition, offset, err := producer.SendMessage(&sarama.ProducerMessage{
			Topic:     topic,
			Partition: int32(i % 2),
			Key:       sarama.StringEncoder(fmt.Sprintf("key-%d", i)),
			Value:     sarama.StringEncoder(fmt.Sprintf("value-%d", i)),
		})
		if err != nil {
			return nil, err
		}
		produced = append(produced, [2]int64{int64(partition), offset})
	}
	return produced, nil
}

type member struct {
	want     int
	mark     map[int32]int64
	mu       sync.Mutex
	consumed [][]any
	done     chan struct{}
	once     sync.Once
}

func (m *member) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (m *member) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (m *member) ConsumeClaim(session sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for msg := range claim.Messages() {
		m.mu.Lock()
		m.consumed = append(m.consumed, []any{msg.Partition, msg.Offset, string(msg.Key), string(msg.Value)})
		if len(m.consumed) == m.want {
			for partition, offset := range m.mark {
				session.MarkOffset(msg.Topic, partition, offset, "")
			}
			m.once.Do(func() { close(m.done) })
		}
		m.mu.Unlock()
	}
	return nil
}

// consume joins GROUP, reads `want` records, marks `mark` and leaves (which commits).
func consume(bootstrap, topic, group string, config *sarama.Config, want int, mark map[int32]int64) ([][]any, error) {
	consumer, err := sarama.NewConsumerGroup([]string{bootstrap}, group, config)
	if err != nil {
		return nil, err
	}
	m := &member{want: want, mark: mark, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	failed := make(chan error, 1)
	go func() {
		for ctx.Err() == nil {
			if err := consumer.Consume(ctx, []string{topic}, m); err != nil {
				failed <- err
				return
			}
		}
	}()
	go func() {
		for err := range consumer.Errors() {
			fmt.Fprintln(os.Stderr, "sarama122: consumer error:", err)
		}
	}()
	select {
	case <-m.done:
	case err := <-failed:
		cancel()
		return nil, err
	case <-time.After(60 * time.Second):
		cancel()
		return nil, fmt.Errorf("read %d of %d records in 60 s", len(m.consumed), want)
	}
	cancel()
	if err := consumer.Close(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	sort.Slice(m.consumed, func(i, j int) bool {
		a, b := m.consumed[i], m.consumed[j]
		if a[0].(int32) != b[0].(int32) {
			return a[0].(int32) < b[0].(int32)
		}
		return a[1].(int64) < b[1].(int64)
	})
	return m.consumed, nil
}
