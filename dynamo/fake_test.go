package dynamo

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// fakeTable is an in-memory DynamoDB table keyed by pk, split into scan
// segments by a hash of pk as DynamoDB does. Like DynamoDB it returns a
// LastEvaluatedKey whenever a page is full, even when nothing follows (the
// next page is then empty).
type fakeTable struct {
	name      string
	items     []map[string]types.AttributeValue // sorted by pk
	itemCount int64                             // what DescribeTable reports
	pageSize  int32                             // when the request has no Limit

	mu    sync.Mutex
	calls []fakeCall
	// fault, when set, may fail a request before it is served; n counts
	// every request from 1.
	fault func(n int, c fakeCall) error
	delay time.Duration
	// holdAfter, when set, holds every request after the holdAfter-th
	// until its context ends (the run stopped it), so a test knows which
	// requests were in flight when it stopped without racing the stop.
	holdAfter int
}

type fakeCall struct {
	Op       string
	Segment  int
	StartKey string // pk of ExclusiveStartKey, "" from the start
}

func newFakeTable(n int) *fakeTable {
	t := &fakeTable{name: "orders", pageSize: 10}
	for i := range n {
		t.items = append(t.items, map[string]types.AttributeValue{
			"pk":    &types.AttributeValueMemberS{Value: fmt.Sprintf("k%05d", i)},
			"n":     &types.AttributeValueMemberN{Value: fmt.Sprint(i)},
			"inner": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"s": &types.AttributeValueMemberS{Value: "ü\n"}}},
		})
	}
	return t
}

func pkOf(m map[string]types.AttributeValue) string {
	if s, ok := m["pk"].(*types.AttributeValueMemberS); ok {
		return s.Value
	}
	return ""
}

func segmentOf(pk string, total int) int {
	h := fnv.New32a()
	h.Write([]byte(pk))
	return int(h.Sum32() % uint32(total))
}

func (t *fakeTable) record(ctx context.Context, c fakeCall) error {
	t.mu.Lock()
	t.calls = append(t.calls, c)
	n := len(t.calls)
	fault, delay, holdAfter := t.fault, t.delay, t.holdAfter
	t.mu.Unlock()
	if holdAfter > 0 && n > holdAfter {
		<-ctx.Done()
		return ctx.Err()
	}
	if delay > 0 {
		time.Sleep(delay)
	}
	if fault != nil {
		return fault(n, c)
	}
	return nil
}

func (t *fakeTable) Calls() []fakeCall {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.calls)
}

func (t *fakeTable) DescribeTable(ctx context.Context, in *dynamodb.DescribeTableInput, _ ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error) {
	if err := t.record(ctx, fakeCall{Op: "DescribeTable"}); err != nil {
		return nil, err
	}
	if aws.ToString(in.TableName) != t.name {
		return nil, &smithy.GenericAPIError{Code: "ResourceNotFoundException", Message: "Requested resource not found"}
	}
	return &dynamodb.DescribeTableOutput{Table: &types.TableDescription{
		TableName: aws.String(t.name), TableArn: aws.String("arn:aws:dynamodb:us-east-1:000000000000:table/" + t.name),
		KeySchema:            []types.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: types.KeyTypeHash}},
		AttributeDefinitions: []types.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: types.ScalarAttributeTypeS}},
		ItemCount:            aws.Int64(t.itemCount), TableSizeBytes: aws.Int64(t.itemCount * 100),
	}}, nil
}

func (t *fakeTable) page(ctx context.Context, seg, total int, start map[string]types.AttributeValue, limit *int32) ([]map[string]types.AttributeValue, map[string]types.AttributeValue, int32, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, 0, err
	}
	c := fakeCall{Op: "Scan", Segment: seg, StartKey: pkOf(start)}
	if err := t.record(ctx, c); err != nil {
		return nil, nil, 0, err
	}
	size := t.pageSize
	if limit != nil {
		size = *limit
	}
	var out []map[string]types.AttributeValue
	for _, it := range t.items {
		pk := pkOf(it)
		if segmentOf(pk, total) != seg || (start != nil && pk <= pkOf(start)) {
			continue
		}
		out = append(out, it)
		if int32(len(out)) == size {
			return out, map[string]types.AttributeValue{"pk": it["pk"]}, int32(len(out)), nil
		}
	}
	return out, nil, int32(len(out)), nil
}

func (t *fakeTable) Scan(ctx context.Context, in *dynamodb.ScanInput, _ ...func(*dynamodb.Options)) (*dynamodb.ScanOutput, error) {
	seg, total := int(aws.ToInt32(in.Segment)), max(1, int(aws.ToInt32(in.TotalSegments)))
	items, lek, n, err := t.page(ctx, seg, total, in.ExclusiveStartKey, in.Limit)
	if err != nil {
		return nil, err
	}
	return &dynamodb.ScanOutput{Items: items, LastEvaluatedKey: lek, Count: n, ScannedCount: n,
		ConsumedCapacity: &types.ConsumedCapacity{CapacityUnits: aws.Float64(float64(n) * 0.5)}}, nil
}

func (t *fakeTable) Query(ctx context.Context, in *dynamodb.QueryInput, _ ...func(*dynamodb.Options)) (*dynamodb.QueryOutput, error) {
	items, lek, n, err := t.page(ctx, 0, 1, in.ExclusiveStartKey, in.Limit)
	if err != nil {
		return nil, err
	}
	return &dynamodb.QueryOutput{Items: items, LastEvaluatedKey: lek, Count: n, ScannedCount: n}, nil
}

// smithyHTTPError is an HTTP error reply the way the SDK wraps one: a
// ResponseError with the status, around an API error.
type smithyHTTPError struct{ status int }

func (e *smithyHTTPError) Error() string {
	return fmt.Sprintf("https response error StatusCode: %d", e.status)
}
func (e *smithyHTTPError) Unwrap() error {
	return &awshttp.ResponseError{ResponseError: &smithyhttp.ResponseError{
		Response: &smithyhttp.Response{Response: &http.Response{StatusCode: e.status}},
		Err:      &smithy.GenericAPIError{Code: "InternalServerError", Message: "Internal server error"},
	}}
}

func apiError(code string) error {
	return &smithy.GenericAPIError{Code: code, Message: code + " from the fake"}
}
