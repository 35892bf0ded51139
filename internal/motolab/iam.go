package motolab

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
)

// AllowAllPolicy is the admin user's policy.
const AllowAllPolicy = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}`

// AdminUser is the IAM user the harness creates with EnforceIAM.
const AdminUser = "motolab-admin"

// createAdmin spends exactly adminNoAuthActions unauthenticated requests
// on an all-powerful user; from then on moto checks every request.
func (s *Server) createAdmin(ctx context.Context) error {
	cfg := s.ConfigFor(aws.Credentials{AccessKeyID: DummyAccessKeyID, SecretAccessKey: DummySecretAccessKey})
	// A retried request would be counted twice and push the admin's own
	// CreateAccessKey past the unauthenticated budget.
	cfg.RetryMaxAttempts = 1
	creds, err := createUser(ctx, iam.NewFromConfig(cfg), AdminUser, AllowAllPolicy)
	if err != nil {
		return err
	}
	s.Admin = creds
	return nil
}

// CreateUser creates an IAM user with one inline policy (a JSON policy
// document) and returns its access key, signed by Admin. Meaningful only
// with EnforceIAM: without it moto allows every request anyway.
func (s *Server) CreateUser(ctx context.Context, name, policy string) (aws.Credentials, error) {
	return createUser(ctx, iam.NewFromConfig(s.Config()), name, policy)
}

func createUser(ctx context.Context, c *iam.Client, name, policy string) (aws.Credentials, error) {
	if _, err := c.CreateUser(ctx, &iam.CreateUserInput{UserName: aws.String(name)}); err != nil {
		return aws.Credentials{}, fmt.Errorf("motolab: create user %s: %w", name, err)
	}
	if _, err := c.PutUserPolicy(ctx, &iam.PutUserPolicyInput{
		UserName:       aws.String(name),
		PolicyName:     aws.String(name + "-policy"),
		PolicyDocument: aws.String(policy),
	}); err != nil {
		return aws.Credentials{}, fmt.Errorf("motolab: put policy of user %s: %w", name, err)
	}
	out, err := c.CreateAccessKey(ctx, &iam.CreateAccessKeyInput{UserName: aws.String(name)})
	if err != nil {
		return aws.Credentials{}, fmt.Errorf("motolab: create access key of user %s: %w", name, err)
	}
	return aws.Credentials{
		AccessKeyID:     aws.ToString(out.AccessKey.AccessKeyId),
		SecretAccessKey: aws.ToString(out.AccessKey.SecretAccessKey),
		Source:          "motolab:" + name,
	}, nil
}
