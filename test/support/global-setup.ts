import { startDynamoDbLocal } from '../../local/dynamodb-local';

/** Starts one DynamoDB Local for the whole run on a free loopback port; each test file makes its own table. */
export default async function globalSetup(): Promise<void> {
  const dynamo = await startDynamoDbLocal();
  process.env.DYNAMODB_ENDPOINT = dynamo.endpoint;
  (globalThis as { __DYNAMODB_LOCAL__?: typeof dynamo }).__DYNAMODB_LOCAL__ = dynamo;
}
