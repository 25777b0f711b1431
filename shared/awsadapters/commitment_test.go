package awsadapters

import (
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// leaseRace is a DynamoDB client on which the lease of an AE changes hands between LeaseCommitmentPeer's refused
// conditional PutItem and its read of the lease in force: the first refused PutItems fail their condition, and each
// GetItem answers the next of reads (an item's until, Unix nanoseconds; -1: no item), the last one from then on.
type leaseRace struct {
	DynamoAPI
	refused    int
	reads      []int64
	puts, gets int
}

func (r *leaseRace) PutItem(context.Context, *dynamodb.PutItemInput, ...func(*dynamodb.Options)) (*dynamodb.PutItemOutput, error) {
	if r.puts++; r.puts <= r.refused {
		return nil, &ddbtypes.ConditionalCheckFailedException{Message: new(string)}
	}
	return &dynamodb.PutItemOutput{}, nil
}

func (r *leaseRace) GetItem(context.Context, *dynamodb.GetItemInput, ...func(*dynamodb.Options)) (*dynamodb.GetItemOutput, error) {
	until := r.reads[min(r.gets, len(r.reads)-1)]
	r.gets++
	if until < 0 {
		return &dynamodb.GetItemOutput{}, nil
	}
	item := commitmentPeerKey("PACS")
	item["holder"], item["until"] = sv("another"), nv(until)
	return &dynamodb.GetItemOutput{Item: item}, nil
}

// TestLeaseCommitmentPeerRacingARelease: a lease found over (released: until 0; or gone) by the read after a refusal
// is taken again, a few times at most, so that "not taken" comes with an end after now. Found by review: the read
// answered "held until 1970", and deliverCommitment left the transaction due then, first in the due order and its
// delivery postponed.
func TestLeaseCommitmentPeerRacingARelease(t *testing.T) {
	now := time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC)
	until := now.Add(3 * time.Minute)
	other := now.Add(time.Minute)
	for _, tt := range []struct {
		name      string
		refused   int
		reads     []int64
		wantOK    bool
		wantHeld  time.Time
		wantPuts  int
		wantReads int
	}{
		{name: "held: refused until its end", refused: 1, reads: []int64{other.UnixNano()}, wantHeld: other, wantPuts: 1, wantReads: 1},
		{name: "released in between: taken", refused: 1, reads: []int64{0}, wantOK: true, wantHeld: until, wantPuts: 2, wantReads: 1},
		{name: "ended in between: taken", refused: 1, reads: []int64{now.UnixNano()}, wantOK: true, wantHeld: until, wantPuts: 2, wantReads: 1},
		{name: "gone in between: taken", refused: 1, reads: []int64{-1}, wantOK: true, wantHeld: until, wantPuts: 2, wantReads: 1},
		{name: "released, then taken by another: refused until its end", refused: 2, reads: []int64{0, other.UnixNano()}, wantHeld: other, wantPuts: 2, wantReads: 2},
		{name: "changing hands at every try: refused until until", refused: 100, reads: []int64{0}, wantHeld: until, wantPuts: 3, wantReads: 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := &leaseRace{refused: tt.refused, reads: tt.reads}
			c := &CommitmentTable{Client: r, Table: "index"}
			held, ok, err := c.LeaseCommitmentPeer(context.Background(), "PACS", "tx01", now, until)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tt.wantOK || !held.Equal(tt.wantHeld) || r.puts != tt.wantPuts || r.gets != tt.wantReads {
				t.Errorf("LeaseCommitmentPeer = %v, held until %v (%d puts, %d reads); want %v, %v (%d puts, %d reads)",
					ok, held, r.puts, r.gets, tt.wantOK, tt.wantHeld, tt.wantPuts, tt.wantReads)
			}
		})
	}
}
