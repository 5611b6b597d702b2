/**
 * AWS calls per flow, counted on the wire: DynamoDB (on DynamoDB Local) through an SDK middleware, AWS IoT and AWS
 * Private CA at aws-sdk-client-mock, through the real handlers, core and adapters, warm (a first device went through
 * every flow before). The counts are deterministic; `test/integration/aws-calls-per-flow.test.ts` asserts them. Beside
 * them, the DynamoDB read and write units each flow consumed (on-demand billing and table throughput are in these units).
 *
 *   npx tsx bench/aws-calls.ts
 */
import 'reflect-metadata';
import { startDynamoDbLocal } from '../local/dynamodb-local';
import { totalOf } from '../test/support/aws-call-counter';
import { countAwsCallsPerFlow, formatFlowCalls } from '../test/support/aws-call-flows';

/** Issue 12's budget for one JITR onboarding. */
const JITR_DYNAMODB_BUDGET = 3;
const JITR_IOT_BUDGET = 5;

async function main(): Promise<void> {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const dynamo = await startDynamoDbLocal();
  try {
    process.env.DYNAMODB_ENDPOINT = dynamo.endpoint;
    const results = await countAwsCallsPerFlow();
    console.log('AWS calls per flow (warm; counted on the wire; Private CA answers the first GetCertificate "in progress", as it does)');
    console.log('DynamoDB capacity units as DynamoDB Local reports them by AWS sizing (write: 1 per KB, 2 per KB in a transaction; consistent read: 1 per 4 KB)\n');
    console.log(formatFlowCalls(results));
    const jitr = results.find((result) => result.flow === 'JITR onboarding')?.calls ?? {};
    const dynamoCalls = totalOf(jitr, 'DynamoDB');
    const iotCalls = totalOf(jitr, 'IoT');
    console.log(`\nJITR onboarding: ${dynamoCalls} DynamoDB calls (budget ${JITR_DYNAMODB_BUDGET}, ratio ${(dynamoCalls / JITR_DYNAMODB_BUDGET).toFixed(2)}), ${iotCalls} AWS IoT calls (budget ${JITR_IOT_BUDGET}), AttachPolicy ${jitr.IoT?.AttachPolicy ?? 0}`);
  } finally {
    await dynamo.stop();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
