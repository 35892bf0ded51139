package ledger

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/krbops/krbops/internal/awserr"
	"github.com/krbops/krbops/internal/fault"
)

// Dynamo is the shared ledger: one DynamoDB table that every operator's
// krbops uses (docs/ledger.md has the item layout). Each decision that must
// hold across processes — one lock holder, one open rotation per
// principal, at most Limit admissions per window — is a single-item
// conditional write, so it is atomic on DynamoDB and on every look-alike
// (dynalite has no transactions). Where a change spans two items, the
// order makes a crash in between err on the safe side: see Admit.
type Dynamo struct {
	db       *dynamodb.Client
	table    string
	now      func() time.Time
	readOnly bool
	// creds is invalidated once when DynamoDB says the token expired: the
	// SDK neither retries that nor refreshes its cache (DESIGN.md).
	creds  *aws.CredentialsCache
	closed atomic.Bool
}

var _ Ledger = (*Dynamo)(nil)

// Partition keys of the table's items. Each kind lives in one partition
// so that listing it is a Query, not a Scan; the ledger writes tens of
// thousands of items a month, far below one partition's throughput.
const (
	pkRotation = "rot"   // sk: rotation id (start time, then random)
	pkOpen     = "open"  // sk: principal; the principal's one open rotation
	pkLock     = "lock"  // sk: principal
	pkWindow   = "win"   // sk: cluster NUL role; admissions of the window
	pkEvent    = "evt"   // sk: time, random; Record's events
	pkAudit    = "audit" // sk: time, random; every state change
)

// Attribute names.
const (
	attrPK      = "pk"
	attrSK      = "sk"
	attrDoc     = "doc" // the JSON of a Rotation, Lock, Event or window
	attrVer     = "ver" // optimistic version of the item
	attrID      = "id"
	attrExpires = "expires_at" // TTL attribute (epoch seconds)
	attrPrinc   = "principal"
	attrCluster = "cluster"
	attrRole    = "role"
	attrOutcome = "outcome"
)

// TTLAttribute is the attribute the table's time to live is enabled on.
const TTLAttribute = attrExpires

// OpenDynamo opens the ledger in table through db, after checking that
// the table exists with the ledger's key schema. creds, when the client
// signs with a cache, is refreshed once on an expired token.
func OpenDynamo(ctx context.Context, db *dynamodb.Client, table string, creds *aws.CredentialsCache, opts Options) (*Dynamo, error) {
	d := &Dynamo{db: db, table: table, now: opts.Now, readOnly: opts.ReadOnly, creds: creds}
	if d.now == nil {
		d.now = time.Now
	}
	var out *dynamodb.DescribeTableOutput
	err := d.call(ctx, "DescribeTable", func(ctx context.Context) (err error) {
		out, err = db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)})
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := CheckSchema(table, out.Table); err != nil {
		return nil, err
	}
	return d, nil
}

// SchemaError is a table whose keys are not the ledger's: another
// application's table, or a typo in --ledger.
type SchemaError struct {
	Table string
	Got   string
}

func (e *SchemaError) Error() string {
	return fmt.Sprintf("ledger: dynamodb table %s is not a krbops ledger: its key is %s, a ledger's is pk (S, hash) and sk (S, range)", e.Table, e.Got)
}

// Hint says what to do.
func (e *SchemaError) Hint() string {
	return "pick another table name in --ledger dynamodb://TABLE?region=R and create it with krbops ledger init"
}

// FaultClass: the invocation names the wrong table (exit 2).
func (e *SchemaError) FaultClass() fault.Class { return fault.Usage }

// CheckSchema checks a described table's key schema.
func CheckSchema(table string, t *types.TableDescription) error {
	if t == nil {
		return &SchemaError{Table: table, Got: "unknown"}
	}
	attrTypes := map[string]types.ScalarAttributeType{}
	for _, a := range t.AttributeDefinitions {
		attrTypes[aws.ToString(a.AttributeName)] = a.AttributeType
	}
	want := map[types.KeyType]string{types.KeyTypeHash: attrPK, types.KeyTypeRange: attrSK}
	var parts []string
	ok := len(t.KeySchema) == 2
	for _, k := range t.KeySchema {
		name := aws.ToString(k.AttributeName)
		parts = append(parts, fmt.Sprintf("%s (%s, %s)", name, attrTypes[name], k.KeyType))
		ok = ok && name == want[k.KeyType] && attrTypes[name] == types.ScalarAttributeTypeS
	}
	got := strings.Join(parts, " and ")
	if !ok {
		return &SchemaError{Table: table, Got: got}
	}
	return nil
}

// ServiceError is a DynamoDB request that failed after the SDK's retries
// (throttling and 5xx are retried with backoff there).
type ServiceError struct {
	Op, Table string
	awserr.Classified
}

func (e *ServiceError) Error() string {
	code := e.Code
	if code == "" {
		code = string(e.Class)
	}
	return fmt.Sprintf("ledger: dynamodb %s on table %s: %s: %s", e.Op, e.Table, code, e.Message)
}

// Hint says what to do next, by class.
func (e *ServiceError) Hint() string {
	switch e.Class {
	case awserr.NotFound:
		return fmt.Sprintf("create the ledger table first: krbops ledger init --ledger 'dynamodb://%s?region=R'", e.Table)
	case awserr.Permission:
		return fmt.Sprintf("the identity may not call dynamodb:%s on table %s: krbops ledger init prints the IAM policy the ledger needs", e.Op, e.Table)
	case awserr.Auth, awserr.Credentials:
		return "refresh the AWS credentials (aws sso login, a new session token) and run again; the ledger was not changed by the failed call"
	case awserr.TLS:
		return e.TLSHint("AWS_CA_BUNDLE")
	}
	return "DynamoDB did not answer (throttled, unreachable or failing) after retries: run again later; check --endpoint-url and the network"
}

// FaultClass: a missing table or a rejected request is the invocation's
// fault (exit 2); anything else is a dependency that did not answer
// (exit 3).
func (e *ServiceError) FaultClass() fault.Class {
	if e.Class == awserr.NotFound || e.Class == awserr.Invalid {
		return fault.Usage
	}
	return fault.Unreachable
}

// errCondition is a conditional write that lost: someone changed the item.
var errCondition = errors.New("ledger: condition failed")

// call runs one request, classifying its failure. An expired token gets
// one refresh and one resend.
func (d *Dynamo) call(ctx context.Context, op string, fn func(context.Context) error) error {
	for refreshed := false; ; refreshed = true {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		var ccf *types.ConditionalCheckFailedException
		if errors.As(err, &ccf) {
			return errCondition
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c := awserr.Classify(err)
		if c.Class == awserr.Auth && d.creds != nil && !refreshed {
			d.creds.Invalidate()
			continue
		}
		return &ServiceError{Op: op, Table: d.table, Classified: c}
	}
}

func (d *Dynamo) usable(write bool) error {
	if d.closed.Load() {
		return ErrClosed
	}
	if write && d.readOnly {
		return ErrReadOnly
	}
	return nil
}

// Close makes later calls fail.
func (d *Dynamo) Close() error {
	d.closed.Store(true)
	return nil
}

// Table is the ledger's table.
func (d *Dynamo) Table() string { return d.table }

type item = map[string]types.AttributeValue

func str(s string) types.AttributeValue { return &types.AttributeValueMemberS{Value: s} }
func num(n int64) types.AttributeValue {
	return &types.AttributeValueMemberN{Value: strconv.FormatInt(n, 10)}
}

func key(pk, sk string) item { return item{attrPK: str(pk), attrSK: str(sk)} }

func getS(it item, name string) string {
	if v, ok := it[name].(*types.AttributeValueMemberS); ok {
		return v.Value
	}
	return ""
}

func getN(it item, name string) int64 {
	if v, ok := it[name].(*types.AttributeValueMemberN); ok {
		n, _ := strconv.ParseInt(v.Value, 10, 64)
		return n
	}
	return 0
}

// get reads one item, strongly consistent; nil when there is none.
func (d *Dynamo) get(ctx context.Context, pk, sk string) (item, error) {
	var out *dynamodb.GetItemOutput
	err := d.call(ctx, "GetItem", func(ctx context.Context) (err error) {
		out, err = d.db.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(d.table), Key: key(pk, sk), ConsistentRead: aws.Bool(true)})
		return err
	})
	if err != nil || len(out.Item) == 0 {
		return nil, err
	}
	return out.Item, nil
}

// put writes it, when cond (if any) holds for the stored item; a lost
// condition is errCondition.
func (d *Dynamo) put(ctx context.Context, it item, cond string, values item) error {
	in := &dynamodb.PutItemInput{TableName: aws.String(d.table), Item: it}
	if cond != "" {
		in.ConditionExpression = aws.String(cond)
		if len(values) > 0 {
			in.ExpressionAttributeValues = values
		}
	}
	return d.call(ctx, "PutItem", func(ctx context.Context) error { _, err := d.db.PutItem(ctx, in); return err })
}

func (d *Dynamo) del(ctx context.Context, pk, sk, cond string, values item) error {
	in := &dynamodb.DeleteItemInput{TableName: aws.String(d.table), Key: key(pk, sk)}
	if cond != "" {
		in.ConditionExpression = aws.String(cond)
		in.ExpressionAttributeValues = values
	}
	return d.call(ctx, "DeleteItem", func(ctx context.Context) error { _, err := d.db.DeleteItem(ctx, in); return err })
}

// versioned is the condition that the stored item is still version ver
// (0: that there is none).
func versioned(ver int64) (string, item) {
	if ver == 0 {
		return "attribute_not_exists(" + attrSK + ")", nil
	}
	return attrVer + " = :ver", item{":ver": num(ver)}
}

// query reads every item of a key condition (paged), in sort-key order
// or reversed; stop, when it returns true, ends the reading early.
func (d *Dynamo) query(ctx context.Context, in *dynamodb.QueryInput, stop func(item) bool) error {
	in.TableName = aws.String(d.table)
	in.ConsistentRead = aws.Bool(true)
	for {
		var out *dynamodb.QueryOutput
		err := d.call(ctx, "Query", func(ctx context.Context) (err error) { out, err = d.db.Query(ctx, in); return err })
		if err != nil {
			return err
		}
		for _, it := range out.Items {
			if stop != nil && stop(it) {
				return nil
			}
		}
		if len(out.LastEvaluatedKey) == 0 {
			return nil
		}
		in.ExclusiveStartKey = out.LastEvaluatedKey
	}
}

func partition(pk string) *dynamodb.QueryInput {
	return &dynamodb.QueryInput{KeyConditionExpression: aws.String("pk = :pk"), ExpressionAttributeValues: item{":pk": str(pk)}}
}

// timeKey is a sort key that orders by t, unique by its random tail.
func timeKey(t time.Time) string { return nanoKey(t) + "-" + randomHex(4) }

func nanoKey(t time.Time) string { return fmt.Sprintf("%019d", max(t.UnixNano(), 0)) }

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// conflictPause spaces the retries of a lost conditional write, so that
// processes contending for one item do not retry in lockstep.
func conflictPause(ctx context.Context, attempt int) error {
	d := time.Duration(mrand.Int64N(int64(time.Millisecond) << min(attempt, 6)))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// --- rotations ---

func (d *Dynamo) getRotation(ctx context.Context, id string) (*Rotation, int64, error) {
	return getDoc[Rotation](ctx, d, pkRotation, id, "rotation "+id)
}

// getDoc reads the item (pk, sk) and decodes its JSON document with its
// version; a missing item is nil. what names it in a parse error.
func getDoc[T any](ctx context.Context, d *Dynamo, pk, sk, what string) (*T, int64, error) {
	it, err := d.get(ctx, pk, sk)
	if err != nil || it == nil {
		return nil, 0, err
	}
	var v T
	if err := json.Unmarshal([]byte(getS(it, attrDoc)), &v); err != nil {
		return nil, 0, fmt.Errorf("ledger: %s does not parse: %w", what, err)
	}
	return &v, getN(it, attrVer), nil
}

func rotationItem(r *Rotation, ver int64) (item, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	it := key(pkRotation, r.ID)
	it[attrDoc], it[attrVer] = str(string(b)), num(ver)
	it[attrPrinc], it[attrCluster], it[attrRole], it[attrOutcome] = str(r.Principal), str(r.Cluster), str(r.Role), str(string(r.Outcome))
	return it, nil
}

func (d *Dynamo) Start(ctx context.Context, r Rotation) (Rotation, error) {
	if r.Started.IsZero() {
		r.Started = d.now()
	}
	return d.start(ctx, r, nil)
}

// Admit decides in the window item's conditional write (see start).
func (d *Dynamo) Admit(ctx context.Context, req AdmitRequest) (Rotation, error) {
	if err := req.validate(); err != nil {
		return Rotation{}, err
	}
	if req.Limit > DynamoMaxLimit {
		return Rotation{}, fmt.Errorf("ledger: a limit of %d rotations per window is above the DynamoDB ledger's %d", req.Limit, DynamoMaxLimit)
	}
	r := req.Rotation
	r.Started = d.now()
	return d.start(ctx, r, &req)
}

// start records r: first its entry in the domain's window item (the
// admission, when req is set), then the rotation item, then the
// principal's open marker. A crash after the first write spends a slot of
// the window with no rotation behind it — the limit is never exceeded,
// at worst undershot until the slot leaves the window. A principal that
// turns out to have an open rotation gets its slot and record back.
// compensating is the context of the writes that undo a half-done start:
// they must run even when ctx was just cancelled (SIGINT), or a slot stays
// spent and a rotation item stays without its open marker.
func compensating(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}

func (d *Dynamo) start(ctx context.Context, r Rotation, req *AdmitRequest) (Rotation, error) {
	if err := d.usable(true); err != nil {
		return Rotation{}, err
	}
	if r.Outcome == "" {
		r.Outcome = InProgress
	}
	r.Started = r.Started.UTC()
	if err := r.validate(); err != nil {
		return Rotation{}, err
	}
	r.ID = timeKey(r.Started)
	// Refused here, a second rotation of the principal costs no slot.
	if o, _, err := d.openOf(ctx, r.Principal); err != nil {
		return Rotation{}, err
	} else if o != nil {
		return Rotation{}, openConflict(r.Principal, o)
	}
	if err := d.claimSlot(ctx, &r, req); err != nil {
		if req != nil && errors.Is(err, ErrNotAdmitted) {
			d.audit(ctx, "refuse", r.Principal, "", string(r.Outcome), r.CorrelationID, err.Error())
		}
		return Rotation{}, err
	}
	it, err := rotationItem(&r, 1)
	if err != nil {
		return Rotation{}, err
	}
	if err := d.put(ctx, it, "attribute_not_exists(sk)", nil); err != nil {
		cctx, cancel := compensating(ctx)
		defer cancel()
		d.releaseSlot(cctx, &r)
		return Rotation{}, err
	}
	if r.Outcome.Open() {
		if err := d.claimOpen(ctx, &r); err != nil {
			cctx, cancel := compensating(ctx)
			defer cancel()
			_ = d.del(cctx, pkRotation, r.ID, "", nil)
			d.releaseSlot(cctx, &r)
			return Rotation{}, err
		}
	}
	action := "start"
	if req != nil {
		action = "admit"
	}
	d.audit(ctx, action, r.Principal, r.ID, string(r.Outcome), r.CorrelationID, "")
	return r, nil
}

// openOf returns the principal's open rotation and the id its marker
// names ("" for none). A marker whose rotation is missing or ended is the
// trace of a crash between two writes: no open rotation.
func (d *Dynamo) openOf(ctx context.Context, principal string) (*Rotation, string, error) {
	m, err := d.get(ctx, pkOpen, principal)
	if err != nil || m == nil {
		return nil, "", err
	}
	id := getS(m, attrID)
	o, _, err := d.getRotation(ctx, id)
	if err != nil {
		return nil, id, err
	}
	if o == nil || !o.Outcome.Open() {
		return nil, id, nil
	}
	return o, id, nil
}

// claimOpen makes r the principal's open rotation: the marker's
// conditional write is what keeps two processes from both starting one.
func (d *Dynamo) claimOpen(ctx context.Context, r *Rotation) error {
	marker := key(pkOpen, r.Principal)
	marker[attrID] = str(r.ID)
	cond, values := "attribute_not_exists(sk)", item(nil)
	for attempt := 0; ; attempt++ {
		err := d.put(ctx, marker, cond, values)
		if !errors.Is(err, errCondition) {
			return err
		}
		o, stale, err := d.openOf(ctx, r.Principal)
		switch {
		case err != nil:
			return err
		case o != nil:
			return openConflict(r.Principal, o)
		case stale == "":
			cond, values = "attribute_not_exists(sk)", nil
		default:
			cond, values = attrID+" = :stale", item{":stale": str(stale)}
		}
		if err := conflictPause(ctx, attempt); err != nil {
			return err
		}
	}
}

// DynamoMaxLimit bounds AdmitRequest.Limit on the DynamoDB ledger: a
// window item keeps the newest DynamoMaxLimit start times (8 bytes each)
// within DynamoDB's 400 KB item limit, and deciding a limit of L needs
// only the newest L.
const DynamoMaxLimit = 40000

// window is a domain's window item: the starts of its recent rotations.
type window struct {
	// Starts are the rotations started within Keep (Unix ns, ascending),
	// stored as one binary attribute of big-endian int64s.
	Starts []int64 `json:"-"`
	// Last is the latest start in the domain, kept after its entry has
	// aged out, for the minimum gap.
	Last int64 `json:"last"`
	// Keep is the longest window or gap any admission asked for: entries
	// are kept that long, so a caller with a longer window than the last
	// one still sees every rotation it must count.
	Keep time.Duration `json:"keep"`
}

const attrStarts = "starts"

func windowSK(cluster, role string) string { return cluster + "\x00" + role }

func (d *Dynamo) getWindow(ctx context.Context, cluster, role string) (window, int64, error) {
	var w window
	it, err := d.get(ctx, pkWindow, windowSK(cluster, role))
	if err != nil || it == nil {
		return w, 0, err
	}
	if err := json.Unmarshal([]byte(getS(it, attrDoc)), &w); err != nil {
		return w, 0, fmt.Errorf("ledger: window of (%s, %s) does not parse: %w", cluster, role, err)
	}
	if b, ok := it[attrStarts].(*types.AttributeValueMemberB); ok {
		for i := 0; i+8 <= len(b.Value); i += 8 {
			w.Starts = append(w.Starts, int64(binary.BigEndian.Uint64(b.Value[i:])))
		}
	}
	return w, getN(it, attrVer), nil
}

// putWindow writes w as version ver+1 if the stored one is still ver.
// The item expires (TTL) once nothing in it can count any more.
func (d *Dynamo) putWindow(ctx context.Context, cluster, role string, w window, ver int64) error {
	b, err := json.Marshal(w)
	if err != nil {
		return err
	}
	slices.Sort(w.Starts)
	if over := len(w.Starts) - DynamoMaxLimit; over > 0 {
		w.Starts = w.Starts[over:]
	}
	starts := make([]byte, 0, 8*len(w.Starts))
	for _, s := range w.Starts {
		starts = binary.BigEndian.AppendUint64(starts, uint64(s))
	}
	it := key(pkWindow, windowSK(cluster, role))
	it[attrDoc], it[attrVer] = str(string(b)), num(ver+1)
	if len(starts) > 0 { // DynamoDB refuses an empty binary value
		it[attrStarts] = &types.AttributeValueMemberB{Value: starts}
	}
	it[attrExpires] = num(time.Unix(0, w.Last).Add(w.Keep).Add(24 * time.Hour).Unix())
	cond, values := versioned(ver)
	return d.put(ctx, it, cond, values)
}

// claimSlot adds r to its domain's window item, after deciding req on
// what the item holds (nil req: no limits, Start). The item's versioned
// write is the admission's atomic step: of processes deciding on the
// same version, one writes and the others decide again on the new one.
func (d *Dynamo) claimSlot(ctx context.Context, r *Rotation, req *AdmitRequest) error {
	for attempt := 0; ; attempt++ {
		w, ver, err := d.getWindow(ctx, r.Cluster, r.Role)
		if err != nil {
			return err
		}
		now := r.Started
		if req != nil {
			w.Keep = max(w.Keep, req.Window, req.MinGap)
			var in []time.Time
			for _, s := range w.Starts {
				if t := time.Unix(0, s); inWindow(t, now, req.Window) {
					in = append(in, t)
				}
			}
			var last time.Time
			if w.Last != 0 {
				last = time.Unix(0, w.Last).UTC()
			}
			if refused := admission(*req, now, in, last); refused != nil {
				return refused
			}
		}
		if w.Keep > 0 { // Start alone never learns how long to keep entries
			pruneAt := d.now()
			w.Starts = slices.DeleteFunc(w.Starts, func(s int64) bool { return !inWindow(time.Unix(0, s), pruneAt, w.Keep) })
		}
		w.Starts = append(w.Starts, now.UnixNano())
		w.Last = max(w.Last, now.UnixNano())
		err = d.putWindow(ctx, r.Cluster, r.Role, w, ver)
		if !errors.Is(err, errCondition) {
			return err
		}
		if err := conflictPause(ctx, attempt); err != nil {
			return err
		}
	}
}

// releaseSlot takes r's entry out of its window again (a start that did
// not happen): one entry with its start time, which is the same count
// whichever rotation of that nanosecond it was. Best effort: a slot it
// cannot free stays spent until it leaves the window, which errs on the
// safe side.
func (d *Dynamo) releaseSlot(ctx context.Context, r *Rotation) {
	for attempt := 0; attempt < 20; attempt++ {
		w, ver, err := d.getWindow(ctx, r.Cluster, r.Role)
		if err != nil || ver == 0 {
			return
		}
		i := slices.Index(w.Starts, r.Started.UnixNano())
		if i < 0 {
			return
		}
		w.Starts = slices.Delete(w.Starts, i, i+1)
		if err := d.putWindow(ctx, r.Cluster, r.Role, w, ver); !errors.Is(err, errCondition) {
			return
		}
		if conflictPause(ctx, attempt) != nil {
			return
		}
	}
}

// Update is a versioned write of the rotation item: fn may run more than
// once when another process updates the same rotation meanwhile.
func (d *Dynamo) Update(ctx context.Context, id string, fn func(*Rotation) error) (Rotation, error) {
	if err := d.usable(true); err != nil {
		return Rotation{}, err
	}
	for attempt := 0; ; attempt++ {
		cur, ver, err := d.getRotation(ctx, id)
		if err != nil {
			return Rotation{}, err
		}
		if cur == nil {
			return Rotation{}, fmt.Errorf("%w: rotation %s", ErrNotFound, id)
		}
		next := *cur
		if err := fn(&next); err != nil {
			return Rotation{}, err
		}
		if err := checkUpdate(*cur, &next, d.now().UTC()); err != nil {
			return Rotation{}, err
		}
		it, err := rotationItem(&next, ver+1)
		if err != nil {
			return Rotation{}, err
		}
		cond, values := versioned(ver)
		err = d.put(ctx, it, cond, values)
		if errors.Is(err, errCondition) {
			if err := conflictPause(ctx, attempt); err != nil {
				return Rotation{}, err
			}
			continue
		}
		if err != nil {
			return Rotation{}, err
		}
		if cur.Outcome.Open() && !next.Outcome.Open() {
			// A crash before this delete leaves a marker of an ended
			// rotation, which openOf reads as none.
			_ = d.del(ctx, pkOpen, next.Principal, attrID+" = :id", item{":id": str(id)})
		}
		if next.Outcome != cur.Outcome {
			d.audit(ctx, "update", next.Principal, id, string(next.Outcome), next.CorrelationID, next.Message)
		}
		return next, nil
	}
}

func (d *Dynamo) Get(ctx context.Context, id string) (Rotation, error) {
	if err := d.usable(false); err != nil {
		return Rotation{}, err
	}
	r, _, err := d.getRotation(ctx, id)
	if err != nil {
		return Rotation{}, err
	}
	if r == nil {
		return Rotation{}, fmt.Errorf("%w: rotation %s", ErrNotFound, id)
	}
	return *r, nil
}

func decodeRotation(it item) (Rotation, error) {
	var r Rotation
	if err := json.Unmarshal([]byte(getS(it, attrDoc)), &r); err != nil {
		return r, fmt.Errorf("ledger: rotation %s does not parse: %w", getS(it, attrSK), err)
	}
	return r, nil
}

// List reads the rotation partition newest first, from Until down to
// Since; the other fields filter on the server.
func (d *Dynamo) List(ctx context.Context, f Filter) ([]Rotation, error) {
	if err := d.usable(false); err != nil {
		return nil, err
	}
	in := &dynamodb.QueryInput{ScanIndexForward: aws.Bool(false), ExpressionAttributeValues: item{":pk": str(pkRotation)}}
	kc := "pk = :pk"
	switch {
	case !f.Since.IsZero() && !f.Until.IsZero():
		kc += " AND sk BETWEEN :from AND :to"
		in.ExpressionAttributeValues[":from"], in.ExpressionAttributeValues[":to"] = str(nanoKey(f.Since)), str(nanoKey(f.Until))
	case !f.Since.IsZero():
		kc += " AND sk >= :from"
		in.ExpressionAttributeValues[":from"] = str(nanoKey(f.Since))
	case !f.Until.IsZero():
		kc += " AND sk < :to"
		in.ExpressionAttributeValues[":to"] = str(nanoKey(f.Until))
	}
	in.KeyConditionExpression = aws.String(kc)
	var conds []string
	in.ExpressionAttributeNames = map[string]string{}
	for _, c := range []struct{ attr, v string }{{attrPrinc, f.Principal}, {attrCluster, f.Cluster}, {attrRole, f.Role}, {attrOutcome, string(f.Outcome)}} {
		if c.v != "" {
			conds = append(conds, "#"+c.attr+" = :"+c.attr)
			in.ExpressionAttributeNames["#"+c.attr] = c.attr
			in.ExpressionAttributeValues[":"+c.attr] = str(c.v)
		}
	}
	if len(conds) > 0 {
		in.FilterExpression = aws.String(strings.Join(conds, " AND "))
	} else {
		in.ExpressionAttributeNames = nil
	}
	var out []Rotation
	var derr error
	err := d.query(ctx, in, func(it item) bool {
		r, err := decodeRotation(it)
		if err != nil {
			derr = err
			return true
		}
		if f.match(&r) { // Until is exclusive to the nanosecond
			out = append(out, r)
		}
		return f.Limit > 0 && len(out) == f.Limit
	})
	if err == nil {
		err = derr
	}
	return out, err
}

// Pending reads the open markers: one item per principal with a rotation
// under way, however long the ledger's history.
func (d *Dynamo) Pending(ctx context.Context) ([]Rotation, error) {
	if err := d.usable(false); err != nil {
		return nil, err
	}
	var ids []string
	if err := d.query(ctx, partition(pkOpen), func(it item) bool { ids = append(ids, getS(it, attrID)); return false }); err != nil {
		return nil, err
	}
	var out []Rotation
	for _, id := range ids {
		r, _, err := d.getRotation(ctx, id)
		if err != nil {
			return nil, err
		}
		if r != nil && r.Outcome.Open() {
			out = append(out, *r)
		}
	}
	slices.SortStableFunc(out, func(a, b Rotation) int { return a.Started.Compare(b.Started) })
	return out, nil
}

func (d *Dynamo) CountSince(ctx context.Context, cluster, role string, since time.Time) (int, error) {
	if err := d.usable(false); err != nil {
		return 0, err
	}
	in := &dynamodb.QueryInput{
		KeyConditionExpression: aws.String("pk = :pk AND sk >= :from"),
		FilterExpression:       aws.String("#c = :c AND #r = :r"),
		ExpressionAttributeNames: map[string]string{
			"#c": attrCluster, "#r": attrRole,
		},
		ExpressionAttributeValues: item{":pk": str(pkRotation), ":from": str(nanoKey(since)), ":c": str(cluster), ":r": str(role)},
		ProjectionExpression:      aws.String(attrSK),
	}
	n := 0
	err := d.query(ctx, in, func(item) bool { n++; return false })
	return n, err
}

// --- locks ---

func (d *Dynamo) getLock(ctx context.Context, principal string) (*Lock, int64, error) {
	return getDoc[Lock](ctx, d, pkLock, principal, "lock of "+principal)
}

// Lock takes or renews the lock with a versioned write of the principal's
// lock item: whoever writes first holds it.
func (d *Dynamo) Lock(ctx context.Context, principal, holder string, ttl time.Duration) (Lock, error) {
	if principal == "" || holder == "" || ttl <= 0 {
		return Lock{}, fmt.Errorf("ledger: lock needs a principal, a holder and a positive ttl (got %q, %q, %s)", principal, holder, ttl)
	}
	if err := d.usable(true); err != nil {
		return Lock{}, err
	}
	for attempt := 0; ; attempt++ {
		cur, ver, err := d.getLock(ctx, principal)
		if err != nil {
			return Lock{}, err
		}
		now := d.now().UTC()
		if cur != nil && cur.Holder != holder {
			return Lock{}, &LockedError{Lock: *cur, Stale: cur.Stale(now)}
		}
		out := Lock{Principal: principal, Holder: holder, Acquired: now, Expires: now.Add(ttl), Renewed: now}
		out.Host, out.PID, out.User = processIdentity()
		if cur != nil {
			out.Acquired = cur.Acquired
		}
		b, err := json.Marshal(out)
		if err != nil {
			return Lock{}, err
		}
		it := key(pkLock, principal)
		it[attrDoc], it[attrVer] = str(string(b)), num(ver+1)
		cond, values := versioned(ver)
		err = d.put(ctx, it, cond, values)
		if errors.Is(err, errCondition) {
			if err := conflictPause(ctx, attempt); err != nil {
				return Lock{}, err
			}
			continue
		}
		if err != nil {
			return Lock{}, err
		}
		if cur == nil {
			d.audit(ctx, "lock", principal, "", "acquired", "", holder)
		}
		return out, nil
	}
}

func (d *Dynamo) Unlock(ctx context.Context, principal, holder string) error {
	if err := d.usable(true); err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		cur, ver, err := d.getLock(ctx, principal)
		if err != nil || cur == nil {
			return err
		}
		if cur.Holder != holder {
			return &LockedError{Lock: *cur, Stale: cur.Stale(d.now())}
		}
		cond, values := versioned(ver)
		err = d.del(ctx, pkLock, principal, cond, values)
		if errors.Is(err, errCondition) {
			if err := conflictPause(ctx, attempt); err != nil {
				return err
			}
			continue
		}
		if err == nil {
			d.audit(ctx, "unlock", principal, "", "released", "", holder)
		}
		return err
	}
}

// BreakLock has the file ledger's rules; the delete is conditional on the
// version read, so of two breakers only one removes a given lock.
func (d *Dynamo) BreakLock(ctx context.Context, principal, holder string, force bool) (Lock, error) {
	if err := d.usable(true); err != nil {
		return Lock{}, err
	}
	for attempt := 0; ; attempt++ {
		cur, ver, err := d.getLock(ctx, principal)
		if err != nil {
			return Lock{}, err
		}
		if cur == nil {
			return Lock{}, fmt.Errorf("%w: no lock on %s", ErrNotFound, principal)
		}
		now := d.now()
		if holder != "" && cur.Holder != holder {
			return Lock{}, &LockedError{Lock: *cur, Stale: cur.Stale(now)}
		}
		if !force && !cur.Stale(now) {
			return Lock{}, &LockedError{Lock: *cur}
		}
		cond, values := versioned(ver)
		err = d.del(ctx, pkLock, principal, cond, values)
		if errors.Is(err, errCondition) {
			if err := conflictPause(ctx, attempt); err != nil {
				return Lock{}, err
			}
			continue
		}
		if err != nil {
			return Lock{}, err
		}
		d.audit(ctx, "break-lock", principal, "", "broken", "", cur.Holder)
		return *cur, nil
	}
}

func (d *Dynamo) Locks(ctx context.Context) ([]Lock, error) {
	if err := d.usable(false); err != nil {
		return nil, err
	}
	return queryDocs[Lock](ctx, d, partition(pkLock), "lock of")
}

// ofPrincipal filters in to principal's items; "" keeps them all.
func ofPrincipal(in *dynamodb.QueryInput, principal string) *dynamodb.QueryInput {
	if principal != "" {
		in.FilterExpression = aws.String("#p = :p")
		in.ExpressionAttributeNames = map[string]string{"#p": attrPrinc}
		in.ExpressionAttributeValues[":p"] = str(principal)
	}
	return in
}

// queryDocs decodes the JSON document (attrDoc) of every item in's query
// reads; what names the kind of item in a parse error.
func queryDocs[T any](ctx context.Context, d *Dynamo, in *dynamodb.QueryInput, what string) ([]T, error) {
	var out []T
	var derr error
	err := d.query(ctx, in, func(it item) bool {
		var v T
		if derr = json.Unmarshal([]byte(getS(it, attrDoc)), &v); derr != nil {
			derr = fmt.Errorf("ledger: %s %s does not parse: %w", what, getS(it, attrSK), derr)
			return true
		}
		out = append(out, v)
		return false
	})
	if err == nil {
		err = derr
	}
	return out, err
}

// --- audit ---

func (d *Dynamo) Record(ctx context.Context, e Event) (Event, error) {
	if e.Principal == "" || e.Action == "" {
		return Event{}, fmt.Errorf("ledger: an event needs a principal and an action")
	}
	if err := d.usable(true); err != nil {
		return Event{}, err
	}
	e.Time = d.now().UTC()
	e.Seq = uint64(e.Time.UnixNano())
	b, err := json.Marshal(e)
	if err != nil {
		return Event{}, err
	}
	it := key(pkEvent, timeKey(e.Time))
	it[attrDoc], it[attrPrinc] = str(string(b)), str(e.Principal)
	if err := d.put(ctx, it, "attribute_not_exists(sk)", nil); err != nil {
		return Event{}, err
	}
	d.audit(ctx, "record:"+e.Action, e.Principal, "", "recorded", "", e.Reason)
	return e, nil
}

func (d *Dynamo) Events(ctx context.Context, principal string) ([]Event, error) {
	if err := d.usable(false); err != nil {
		return nil, err
	}
	return queryDocs[Event](ctx, d, ofPrincipal(partition(pkEvent), principal), "audit event")
}

// Change is one entry of the DynamoDB ledger's change log: every state
// change (start, admission and refusal, outcome change, lock taken,
// released or broken, event recorded), with who made it.
type Change struct {
	Time          time.Time `json:"time"`
	Action        string    `json:"action"`
	Principal     string    `json:"principal"`
	RotationID    string    `json:"rotation_id,omitempty"`
	Outcome       string    `json:"outcome,omitempty"`
	CorrelationID string    `json:"correlation_id,omitempty"`
	Who           string    `json:"who"` // user@host pid N
	Detail        string    `json:"detail,omitempty"`
}

// audit appends a Change. It is written after the change it describes:
// a failure to write it does not undo the change, and is not reported
// (the change item itself is the record of truth).
func (d *Dynamo) audit(ctx context.Context, action, principal, id, outcome, corr, detail string) {
	host, pid, user := processIdentity()
	c := Change{Time: d.now().UTC(), Action: action, Principal: principal, RotationID: id, Outcome: outcome,
		CorrelationID: corr, Who: fmt.Sprintf("%s@%s pid %d", user, host, pid), Detail: detail}
	b, err := json.Marshal(c)
	if err != nil {
		return
	}
	it := key(pkAudit, timeKey(c.Time))
	it[attrDoc], it[attrPrinc] = str(string(b)), str(principal)
	_ = d.put(ctx, it, "", nil)
}

// Changes returns the change log of principal ("" for all), oldest first.
func (d *Dynamo) Changes(ctx context.Context, principal string) ([]Change, error) {
	if err := d.usable(false); err != nil {
		return nil, err
	}
	in := ofPrincipal(partition(pkAudit), principal)
	var out []Change
	err := d.query(ctx, in, func(it item) bool {
		var c Change
		if json.Unmarshal([]byte(getS(it, attrDoc)), &c) == nil {
			out = append(out, c)
		}
		return false
	})
	return out, err
}
