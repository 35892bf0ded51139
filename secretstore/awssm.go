package secretstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"

	"github.com/krbops/krbops/internal/awserr"
	"github.com/krbops/krbops/internal/cabundle"
)

// Secrets Manager's staging labels for the three stages.
const (
	labelCurrent  = "AWSCURRENT"
	labelPending  = "AWSPENDING"
	labelPrevious = "AWSPREVIOUS"
)

func stageLabel(s Stage) (string, bool) {
	switch s {
	case StageCurrent:
		return labelCurrent, true
	case StagePending:
		return labelPending, true
	case StagePrevious:
		return labelPrevious, true
	}
	return "", false
}

// stagesOf maps labels to stages; labels of other tools are not stages.
func stagesOf(labels []string) []Stage {
	var in []Stage
	for _, l := range labels {
		switch l {
		case labelCurrent:
			in = append(in, StageCurrent)
		case labelPending:
			in = append(in, StagePending)
		case labelPrevious:
			in = append(in, StagePrevious)
		}
	}
	return sortStages(in)
}

// smAPI is the part of the Secrets Manager client the store uses.
type smAPI interface {
	DescribeSecret(context.Context, *secretsmanager.DescribeSecretInput, ...func(*secretsmanager.Options)) (*secretsmanager.DescribeSecretOutput, error)
	GetSecretValue(context.Context, *secretsmanager.GetSecretValueInput, ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
	ListSecretVersionIds(context.Context, *secretsmanager.ListSecretVersionIdsInput, ...func(*secretsmanager.Options)) (*secretsmanager.ListSecretVersionIdsOutput, error)
	PutSecretValue(context.Context, *secretsmanager.PutSecretValueInput, ...func(*secretsmanager.Options)) (*secretsmanager.PutSecretValueOutput, error)
	UpdateSecretVersionStage(context.Context, *secretsmanager.UpdateSecretVersionStageInput, ...func(*secretsmanager.Options)) (*secretsmanager.UpdateSecretVersionStageOutput, error)
}

type awsStore struct {
	url    string
	prefix string
	sm     smAPI
	// customEndpoint: the endpoint came from the URL or the operator's AWS
	// configuration, not AWS's default for the region.
	customEndpoint bool
}

func openAWSSM(ctx context.Context, rawURL string, opts Options) (*awsStore, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse's error quotes the input: a URL carries no secret.
		return nil, fmt.Errorf("secretstore: %w", err)
	}
	if u.User != nil {
		return nil, fmt.Errorf("secretstore: %s: credentials do not belong in the store URL; use the AWS credential chain", redactURL(u))
	}
	s := &awsStore{prefix: strings.Trim(u.Host+u.Path, "/")}
	s.url = "awssm://" + s.prefix
	if u.RawQuery != "" {
		s.url += "?" + u.RawQuery
	}
	if s.prefix != "" {
		if err := ValidAWSName(s.prefix); err != nil {
			return nil, fmt.Errorf("secretstore: %s: bad name prefix: %w", s.url, err)
		}
	}
	q := u.Query()
	for k := range q {
		if k != "region" && k != "endpoint" {
			return nil, fmt.Errorf("secretstore: %s: unknown parameter %q (known: region, endpoint)", s.url, k)
		}
	}
	var cfg aws.Config
	if opts.AWS != nil {
		cfg = opts.AWS.Copy()
	} else {
		cfg, err = config.LoadDefaultConfig(ctx, cabundle.AWSOptions(opts.TLS)...)
		if err != nil {
			return nil, fmt.Errorf("secretstore: %s: load AWS configuration: %w", s.url, err)
		}
	}
	if r := q.Get("region"); r != "" {
		cfg.Region = r
	}
	if cfg.Region == "" {
		return nil, fmt.Errorf("secretstore: %s: no AWS region (add ?region=R or set AWS_REGION)", s.url)
	}
	// Body logging would write SecretBinary to the log in base64; krbops
	// never wants it, whatever configuration the caller passed in.
	cfg.ClientLogMode &^= aws.LogRequestWithBody | aws.LogResponseWithBody
	var endpoint *string
	if e := q.Get("endpoint"); e != "" {
		eu, err := url.Parse(e)
		if err != nil || (eu.Scheme != "http" && eu.Scheme != "https") || eu.Host == "" {
			return nil, fmt.Errorf("secretstore: %s: endpoint %q is not an http(s) URL", s.url, e)
		}
		endpoint = aws.String(e)
	}
	s.sm = secretsmanager.NewFromConfig(cfg, func(o *secretsmanager.Options) {
		if endpoint != nil {
			o.BaseEndpoint = endpoint
		}
		// The SDK has applied AWS_ENDPOINT_URL* and the profile's
		// endpoint_url by now: any of them is the operator's choice.
		s.customEndpoint = o.BaseEndpoint != nil
		// A JSON-protocol client reads only JSON error bodies; an AWS
		// look-alike denies in XML (moto: 403 AccessDenied).
		o.APIOptions = append(o.APIOptions, awserr.AddXMLErrorMiddleware)
		// The standard retryer would retry a certificate it cannot
		// verify, with backoff, until its attempts are spent.
		o.Retryer = awserr.WithoutTLSRetries(o.Retryer)
	})
	return s, nil
}

// id is the Secrets Manager name of secret name.
func (s *awsStore) id(name string) string {
	if s.prefix == "" {
		return name
	}
	return s.prefix + "/" + name
}

// fail builds the *Error of one operation; err is a kindError from the
// store's own checks or an SDK error to classify.
func (s *awsStore) fail(ctx context.Context, op, name string, err error) error {
	if err == nil {
		return nil
	}
	e := &Error{Op: op, Store: s.url, Secret: s.id(name), Err: err}
	var ke *kindError
	if errors.As(err, &ke) {
		e.Kind, e.HintText = ke.kind, ke.hint
		return e
	}
	if ctx.Err() != nil {
		// The caller gave up (signal, deadline): not the service's fault,
		// and not worth a retry.
		return e
	}
	var c awserr.Classified
	e.Kind, e.class, e.Err, c = classifyAWS(err, s.customEndpoint)
	e.HintText = awsHint(e.Kind, c, op, s.id(name))
	return e
}

func (s *awsStore) begin(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ValidAWSName(name); err != nil {
		return err
	}
	if len(s.id(name)) > maxNameLen {
		return fmt.Errorf("secret name %q with prefix %q exceeds %d characters", name, s.prefix, maxNameLen)
	}
	return nil
}

func (s *awsStore) Get(ctx context.Context, name string, stage Stage) (Version, error) {
	if err := s.begin(ctx, name); err != nil {
		return Version{}, s.fail(ctx, "get", name, err)
	}
	label, ok := stageLabel(stage)
	if !ok {
		return Version{}, s.fail(ctx, "get", name, fmt.Errorf("unknown stage %q", stage))
	}
	v, err := s.getValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(s.id(name)), VersionStage: aws.String(label)})
	return v, s.fail(ctx, "get", name, err)
}

func (s *awsStore) GetVersion(ctx context.Context, name, versionID string) (Version, error) {
	if err := s.begin(ctx, name); err != nil {
		return Version{}, s.fail(ctx, "get-version", name, err)
	}
	v, err := s.getValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(s.id(name)), VersionId: aws.String(versionID)})
	return v, s.fail(ctx, "get-version", name, err)
}

func (s *awsStore) getValue(ctx context.Context, in *secretsmanager.GetSecretValueInput) (Version, error) {
	out, err := s.sm.GetSecretValue(ctx, in)
	if err != nil {
		return Version{}, err
	}
	if out.SecretBinary == nil {
		return Version{}, failf(ErrCorrupt, "version %s holds a SecretString, not a binary keytab", aws.ToString(out.VersionId)).
			withHint("this secret was not written by krbops; store keytabs as SecretBinary")
	}
	// Secrets Manager stores at most MaxDataSize; more came from something
	// else answering at the endpoint, and is not handed on as a keytab.
	if len(out.SecretBinary) > MaxDataSize {
		return Version{}, failf(ErrCorrupt, "version %s holds %d bytes, more than the %d a secret can hold", aws.ToString(out.VersionId), len(out.SecretBinary), MaxDataSize).
			withHint("check the store's endpoint: Secrets Manager never returns a larger secret")
	}
	return Version{
		ID:      aws.ToString(out.VersionId),
		Stages:  stagesOf(out.VersionStages),
		Created: aws.ToTime(out.CreatedDate),
		Data:    out.SecretBinary,
	}, nil
}

func (s *awsStore) Versions(ctx context.Context, name string) ([]Version, error) {
	if err := s.begin(ctx, name); err != nil {
		return nil, s.fail(ctx, "versions", name, err)
	}
	vs, err := s.versions(ctx, name)
	return vs, s.fail(ctx, "versions", name, err)
}

// versions lists every version, deprecated ones (no label) included: a
// token must be found even after its version lost the pending stage.
func (s *awsStore) versions(ctx context.Context, name string) ([]Version, error) {
	var out []Version
	p := secretsmanager.NewListSecretVersionIdsPaginator(s.sm, &secretsmanager.ListSecretVersionIdsInput{
		SecretId:          aws.String(s.id(name)),
		IncludeDeprecated: aws.Bool(true),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, e := range page.Versions {
			out = append(out, versionOf(e))
		}
	}
	slices.SortStableFunc(out, func(a, b Version) int { return a.Created.Compare(b.Created) })
	return out, nil
}

func versionOf(e types.SecretVersionsListEntry) Version {
	return Version{ID: aws.ToString(e.VersionId), Stages: stagesOf(e.VersionStages), Created: aws.ToTime(e.CreatedDate)}
}

func (s *awsStore) Seed(ctx context.Context, name string, data []byte, token string) (Version, error) {
	v, err := s.put(ctx, name, data, token, StageCurrent)
	return v, s.fail(ctx, "seed", name, err)
}

func (s *awsStore) PutPending(ctx context.Context, name string, data []byte, token string) (Version, error) {
	v, err := s.put(ctx, name, data, token, StagePending)
	return v, s.fail(ctx, "put-pending", name, err)
}

// put writes a version labelled AWSPENDING (or AWSCURRENT for Seed) with
// ClientRequestToken = token. It looks the token up first rather than
// relying on the service's own idempotency: a repeat must return the
// version even after it was promoted, and a token reused for other data
// must be refused the same way by every backend (moto, for one, overwrites
// a pending version whose token is reused).
func (s *awsStore) put(ctx context.Context, name string, data []byte, token string, stage Stage) (Version, error) {
	if err := s.begin(ctx, name); err != nil {
		return Version{}, err
	}
	if err := ValidToken(token); err != nil {
		return Version{}, err
	}
	if err := checkData(data); err != nil {
		return Version{}, err
	}
	if err := s.describe(ctx, name); err != nil {
		return Version{}, err
	}
	vs, err := s.versions(ctx, name)
	if err != nil {
		return Version{}, err
	}
	var cur *Version
	for i := range vs {
		if vs[i].Has(StageCurrent) {
			cur = &vs[i]
		}
		if vs[i].ID != token {
			continue
		}
		old, err := s.getValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(s.id(name)), VersionId: aws.String(token)})
		if err != nil {
			return Version{}, err
		}
		if !bytes.Equal(old.Data, data) {
			return Version{}, failf(ErrConflict, "token %s already stored other data as version %s", token, token).
				withHint("a new keytab needs a new token")
		}
		return old, nil
	}
	switch {
	case stage == StagePending && cur == nil:
		// The service would make this first version AWSCURRENT at once,
		// handing services a key the KDC does not have yet.
		return Version{}, failf(ErrConflict, "secret has no current version").withHint("store its current keytab first (seed)")
	case stage == StageCurrent && cur != nil:
		return Version{}, failf(ErrConflict, "secret already has current version %s", cur.ID).
			withHint("store a new keytab as pending and promote it")
	}
	label, _ := stageLabel(stage)
	out, err := s.sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{
		SecretId:           aws.String(s.id(name)),
		SecretBinary:       data,
		ClientRequestToken: aws.String(token),
		// Without VersionStages the service moves AWSCURRENT to the new
		// version at once, before the KDC has the new key.
		VersionStages: []string{label},
	})
	if err != nil {
		return Version{}, err
	}
	return Version{ID: aws.ToString(out.VersionId), Stages: stagesOf(out.VersionStages), Data: bytes.Clone(data)}, nil
}

// describe refuses secrets krbops must not write: one scheduled for
// deletion, and one a rotation Lambda also rotates (it would move the same
// labels under the rotation's feet).
func (s *awsStore) describe(ctx context.Context, name string) error {
	d, err := s.sm.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(s.id(name))})
	if err != nil {
		return err
	}
	if d.DeletedDate != nil {
		return failf(ErrConflict, "secret is scheduled for deletion on %s", d.DeletedDate.UTC().Format("2006-01-02")).
			withHint("restore it (aws secretsmanager restore-secret) or use another secret")
	}
	if aws.ToBool(d.RotationEnabled) {
		return failf(ErrConflict, "secret has Secrets Manager rotation enabled (%s)", aws.ToString(d.RotationLambdaARN)).
			withHint("disable its rotation (aws secretsmanager cancel-rotate-secret): krbops and the Lambda would fight over AWSPENDING")
	}
	return nil
}

func (s *awsStore) Promote(ctx context.Context, name, versionID string) error {
	return s.fail(ctx, "promote", name, s.promote(ctx, name, versionID))
}

// promote moves AWSCURRENT to the pending version (the service moves
// AWSPREVIOUS to the old current itself), then removes AWSPENDING. A crash
// between the two calls leaves the version current and pending; a repeat
// finds it current and only removes AWSPENDING.
func (s *awsStore) promote(ctx context.Context, name, versionID string) error {
	if err := s.begin(ctx, name); err != nil {
		return err
	}
	if err := s.describe(ctx, name); err != nil {
		return err
	}
	vs, err := s.versions(ctx, name)
	if err != nil {
		return err
	}
	var target, cur *Version
	for i := range vs {
		if vs[i].ID == versionID {
			target = &vs[i]
		}
		if vs[i].Has(StageCurrent) {
			cur = &vs[i]
		}
	}
	if target == nil {
		return failf(ErrNotFound, "no version %q", versionID)
	}
	if !target.Has(StageCurrent) {
		if !target.Has(StagePending) {
			return failf(ErrConflict, "version %s is not pending (stages %v)", versionID, target.Stages).
				withHint("another keytab was stored as pending since; promote that version or store this one again")
		}
		in := &secretsmanager.UpdateSecretVersionStageInput{
			SecretId:        aws.String(s.id(name)),
			VersionStage:    aws.String(labelCurrent),
			MoveToVersionId: aws.String(versionID),
		}
		if cur != nil {
			in.RemoveFromVersionId = aws.String(cur.ID)
		}
		if _, err := s.sm.UpdateSecretVersionStage(ctx, in); err != nil {
			return err
		}
	} else if !target.Has(StagePending) {
		return nil
	}
	_, err = s.sm.UpdateSecretVersionStage(ctx, &secretsmanager.UpdateSecretVersionStageInput{
		SecretId:            aws.String(s.id(name)),
		VersionStage:        aws.String(labelPending),
		RemoveFromVersionId: aws.String(versionID),
	})
	return err
}

func (s *awsStore) Discard(ctx context.Context, name, versionID string) error {
	return s.fail(ctx, "discard", name, s.discard(ctx, name, versionID))
}

// discard removes AWSPENDING from versionID; the version itself stays
// (Secrets Manager deletes unlabelled versions on its own schedule).
func (s *awsStore) discard(ctx context.Context, name, versionID string) error {
	if err := s.begin(ctx, name); err != nil {
		return err
	}
	vs, err := s.versions(ctx, name)
	if err != nil {
		return err
	}
	var target *Version
	for i := range vs {
		if vs[i].ID == versionID {
			target = &vs[i]
		}
	}
	switch {
	case target == nil:
		return failf(ErrNotFound, "no version %q", versionID)
	case target.Has(StageCurrent):
		return failf(ErrConflict, "version %s is current, not a pending version to discard", versionID)
	case !target.Has(StagePending):
		return nil
	}
	_, err = s.sm.UpdateSecretVersionStage(ctx, &secretsmanager.UpdateSecretVersionStageInput{
		SecretId:            aws.String(s.id(name)),
		VersionStage:        aws.String(labelPending),
		RemoveFromVersionId: aws.String(versionID),
	})
	return err
}

func (s *awsStore) Check(ctx context.Context, name string) error {
	return s.fail(ctx, "check", name, s.check(ctx, name))
}

// check reads the secret's metadata and version list: the service answers,
// the credentials work, the secret exists and no Lambda rotates it. Write
// permission cannot be proven without writing a version; PutPending is the
// first write and moves no stage that services read.
func (s *awsStore) check(ctx context.Context, name string) error {
	if err := s.begin(ctx, name); err != nil {
		return err
	}
	if err := s.describe(ctx, name); err != nil {
		return err
	}
	_, err := s.sm.ListSecretVersionIds(ctx, &secretsmanager.ListSecretVersionIdsInput{
		SecretId:   aws.String(s.id(name)),
		MaxResults: aws.Int32(1),
	})
	return err
}
