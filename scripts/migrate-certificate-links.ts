/**
 * One-time upgrade of a device table written by iot-certificate-lifecycle 0.1.0 (device items that list their
 * certificates in `certificateIds`): writes the certificate links this version reads. Safe to run again.
 *
 *   npx tsx scripts/migrate-certificate-links.ts --table <DeviceTableName output of the stack>
 *
 * Uses the AWS credentials and region of the environment (AWS_PROFILE, AWS_REGION), like the AWS CLI.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DynamoDBDocumentClient } from '@aws-sdk/lib-dynamodb';
import { DynamoDbDeviceStore } from '../functions/adapters/aws/dynamodb-device-store';

async function main(): Promise<void> {
  const index = process.argv.indexOf('--table');
  const tableName = index >= 0 ? process.argv[index + 1] : undefined;
  if (!tableName) {
    console.error('usage: npx tsx scripts/migrate-certificate-links.ts --table <device table name>');
    process.exit(2);
  }
  const documentClient = DynamoDBDocumentClient.from(new DynamoDBClient({}), { marshallOptions: { removeUndefinedValues: true } });
  const migrated = await new DynamoDbDeviceStore({ tableName, documentClient }).migrateCertificateLists();
  console.log(`linked the certificates of ${migrated} device(s) in ${tableName}`);
}

main().catch((error: unknown) => {
  console.error(`migration failed: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
