package assetcycle.connector.kinesis;

import software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider;
import software.amazon.awssdk.http.apache.ApacheHttpClient;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.retries.api.BackoffStrategy;
import software.amazon.awssdk.awscore.retry.AwsRetryStrategy;
import software.amazon.awssdk.retries.api.RetryStrategy;
import software.amazon.awssdk.services.kinesis.KinesisClient;
import software.amazon.awssdk.services.kinesis.KinesisClientBuilder;

import java.net.URI;
import java.time.Duration;

/** Builds the synchronous Kinesis client the enumerator and the readers use. */
final class KinesisClients {

    private KinesisClients() {}

    /** A client for the options' region (and endpoint), credentials from the default chain. */
    static KinesisClient create(KinesisSourceOptions options) {
        BackoffStrategy backoff = BackoffStrategy.exponentialDelay(options.retryMinDelay, options.retryMaxDelay);
        RetryStrategy retries = AwsRetryStrategy.standardRetryStrategy().toBuilder()
                .maxAttempts(options.retryMaxAttempts)
                .backoffStrategy(backoff)
                .throttlingBackoffStrategy(backoff)
                .build();
        KinesisClientBuilder builder = KinesisClient.builder()
                .region(Region.of(options.region))
                .credentialsProvider(DefaultCredentialsProvider.builder().build())
                .httpClientBuilder(ApacheHttpClient.builder()
                        .connectionTimeout(Duration.ofSeconds(10))
                        .socketTimeout(Duration.ofSeconds(30)))
                .overrideConfiguration(c -> c.retryStrategy(retries));
        if (options.endpoint != null) {
            builder.endpointOverride(URI.create(options.endpoint));
        }
        return builder.build();
    }
}
