import { RemovalPolicy } from 'aws-cdk-lib';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import type { Construct } from 'constructs';
import { DEVICE_TABLE_SCHEMA } from '../functions/adapters/aws/device-table';

/** The table settings every table gets: on-demand, point-in-time recovery, KMS encryption, guarded deletion. */
export function tableDefaults(removalPolicy: RemovalPolicy): Pick<dynamodb.TableProps, 'billingMode' | 'pointInTimeRecoverySpecification' | 'encryption' | 'removalPolicy' | 'deletionProtection'> {
  return {
    billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
    pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
    encryption: dynamodb.TableEncryption.AWS_MANAGED,
    removalPolicy,
    deletionProtection: removalPolicy === RemovalPolicy.RETAIN,
  };
}

/**
 * The table of devices, certificates, audit events and operation records, with its indexes (DEVICE_TABLE_SCHEMA).
 * Created as `DeviceTable` directly in `scope`: a retained table must keep its logical id.
 */
export function addDeviceTable(scope: Construct, removalPolicy: RemovalPolicy): dynamodb.Table {
  const table = new dynamodb.Table(scope, 'DeviceTable', {
    ...tableDefaults(removalPolicy),
    partitionKey: { name: DEVICE_TABLE_SCHEMA.partitionKey, type: dynamodb.AttributeType.STRING },
    sortKey: { name: DEVICE_TABLE_SCHEMA.sortKey, type: dynamodb.AttributeType.STRING },
    // Operation records carry an expiry (epoch seconds) and age out; devices, certificates and audit events never do.
    timeToLiveAttribute: DEVICE_TABLE_SCHEMA.timeToLiveAttribute,
  });
  for (const index of [DEVICE_TABLE_SCHEMA.byStatusIndex, DEVICE_TABLE_SCHEMA.byExpiryIndex]) {
    table.addGlobalSecondaryIndex({
      indexName: index.indexName,
      partitionKey: { name: index.partitionKey, type: dynamodb.AttributeType.STRING },
      sortKey: { name: index.sortKey, type: dynamodb.AttributeType.STRING },
      projectionType: dynamodb.ProjectionType.ALL,
    });
  }
  return table;
}
