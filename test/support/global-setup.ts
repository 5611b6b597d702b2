import { startDynamoDbLocal } from '../../local/dynamodb-local';

/** Starts one DynamoDB Local for the whole run on a free loopback port; each test file makes its own table. */
export default async function globalSetup(): Promise<void> {
  // The AWS SDK warns once per module registry (so once per test file, and once per spawned local mode) that its
  // releases after January 2027 need Node.js 22; package.json still supports Node.js 20. This is the SDK's documented
  // switch for it (https://github.com/aws/aws-sdk-js-v3/issues/7983). Set before any client is made, it reaches the
  // test files and the child processes the e2e tests spawn, which inherit the environment.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const dynamo = await startDynamoDbLocal();
  process.env.DYNAMODB_ENDPOINT = dynamo.endpoint;
  (globalThis as { __DYNAMODB_LOCAL__?: typeof dynamo }).__DYNAMODB_LOCAL__ = dynamo;
}
