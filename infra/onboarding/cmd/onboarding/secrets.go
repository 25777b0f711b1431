package main

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
)

// secretGetter is the one Secrets Manager call the command makes.
type secretGetter interface {
	GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
}

var _ secretGetter = (*secretsmanager.Client)(nil)

// fetchSecret reads a secret with the standard AWS credential chain
// (AWS_PROFILE, ...) in region, its ARN's (the kit's PSKSecret.Region, which
// Build never leaves empty), so the caller's default region does not
// matter.
func fetchSecret(ctx context.Context, arn, region string) (string, error) {
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(region))
	if err != nil {
		return "", fmt.Errorf("load aws config: %w", err)
	}
	return getSecret(ctx, secretsmanager.NewFromConfig(cfg), arn)
}

func getSecret(ctx context.Context, c secretGetter, arn string) (string, error) {
	out, err := c.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: &arn})
	if err != nil {
		return "", fmt.Errorf("get secret %s: %w", arn, err)
	}
	if out.SecretString == nil {
		return "", fmt.Errorf("get secret %s: no SecretString", arn)
	}
	return *out.SecretString, nil
}
