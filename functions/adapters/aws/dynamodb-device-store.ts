import { ConditionalCheckFailedException, DynamoDBClient, TransactionCanceledException } from '@aws-sdk/client-dynamodb';
import {
  BatchGetCommand,
  DynamoDBDocumentClient,
  GetCommand,
  PutCommand,
  QueryCommand,
  ScanCommand,
  TransactWriteCommand,
  type TransactWriteCommandInput,
} from '@aws-sdk/lib-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import { ConflictError, ValidationError } from '../../core/errors';
import { DEVICE_STATUSES, type AuditEvent, type CertificateRecord, type Device, type DeviceView, type OperationRecord, type Page } from '../../core/model';
import { isLiveCertificateStatus } from '../../core/state-machines';
import { OPERATION_RETENTION_DAYS, type DeviceStore, type ExpiringCertificatesQuery, type RotationsDueQuery, type ListDevicesQuery, type StoreChange } from '../../core/ports';
import { retryingClientConfig, toUpstreamError } from './aws-errors';
import { DEVICE_TABLE_SCHEMA } from './device-table';

export interface DynamoDbDeviceStoreOptions {
  readonly tableName: string;
  /** A document client to use; one is built with retrying defaults when omitted. */
  readonly documentClient?: DynamoDBDocumentClient;
}

/** DynamoDB allows 100 items in one transaction; the core splits its changes below that, so a larger one is a bug, refused. */
const MAX_TRANSACTION_ITEMS = 100;
/** DynamoDB allows 100 keys in one BatchGetItem. */
const MAX_BATCH_GET_KEYS = 100;

const deviceKey = (deviceId: string) => ({ PK: `DEVICE#${deviceId}`, SK: 'DEVICE' });
const certificateKey = (certificateId: string) => ({ PK: `CERTIFICATE#${certificateId}`, SK: 'CERTIFICATE' });
const operationKey = (operationId: string) => ({ PK: `OPERATION#${operationId}`, SK: 'OPERATION' });
/** A certificate's link in its device's partition: the device's certificates are one consistent Query, oldest first. */
const CERTIFICATE_LINK_PREFIX = 'CERTIFICATE#';
const certificateLinkKey = (certificate: CertificateRecord) => ({ PK: `DEVICE#${certificate.deviceId}`, SK: `${CERTIFICATE_LINK_PREFIX}${certificate.createdAt}#${certificate.certificateId}` });
const STORAGE_ATTRIBUTES = ['PK', 'SK', 'GSI1PK', 'GSI1SK', 'GSI2PK', 'GSI2SK', 'itemType', 'expiresAt'];

/**
 * The device store on one DynamoDB table (layout in `device-table.ts`).
 * Every change is one `TransactWriteItems`: the operation record and each other record conditioned
 * on its version (or on not existing yet), the links of new certificates, and the audit events.
 * A change of exactly one record (an operation's progress, its lease) is one conditional `PutItem` instead, with the
 * same condition: on AWS a transactional write costs twice the write units of a plain one.
 */
export class DynamoDbDeviceStore implements DeviceStore {
  private readonly tableName: string;
  private readonly client: DynamoDBDocumentClient;

  public constructor(options: DynamoDbDeviceStoreOptions) {
    this.tableName = options.tableName;
    this.client =
      options.documentClient ??
      DynamoDBDocumentClient.from(new DynamoDBClient(retryingClientConfig), { marshallOptions: { removeUndefinedValues: true } });
  }

  public async getDevice(deviceId: string): Promise<Device | undefined> {
    const { Item } = await this.send('GetItem', () =>
      this.client.send(new GetCommand({ TableName: this.tableName, Key: deviceKey(deviceId), ConsistentRead: true })),
    );
    return Item ? (stripStorage(Item) as unknown as Device) : undefined;
  }

  public async getDeviceView(deviceId: string, eventLimit: number): Promise<DeviceView | undefined> {
    const device = await this.getDevice(deviceId);
    if (!device) return undefined;
    const [certificates, events] = await Promise.all([this.listDeviceCertificates(deviceId), this.latestEvents(`DEVICE#${deviceId}`, eventLimit)]);
    return { device, certificates, events };
  }

  public async getCertificate(certificateId: string): Promise<CertificateRecord | undefined> {
    const { Item } = await this.send('GetItem', () =>
      this.client.send(new GetCommand({ TableName: this.tableName, Key: certificateKey(certificateId), ConsistentRead: true })),
    );
    return Item ? (stripStorage(Item) as unknown as CertificateRecord) : undefined;
  }

  /** One consistent BatchGetItem of both items (what DynamoDB leaves unprocessed is asked again). */
  public async getDeviceAndCertificate(deviceId: string, certificateId: string): Promise<{ device?: Device; certificate?: CertificateRecord }> {
    const items = await this.batchGet([deviceKey(deviceId), certificateKey(certificateId)]);
    const device = items.find((item) => item.itemType === 'Device');
    const certificate = items.find((item) => item.itemType === 'Certificate');
    return {
      ...(device ? { device: stripStorage(device) as unknown as Device } : {}),
      ...(certificate ? { certificate: stripStorage(certificate) as unknown as CertificateRecord } : {}),
    };
  }

  public async listDeviceCertificates(deviceId: string): Promise<CertificateRecord[]> {
    const certificateIds: string[] = [];
    let startKey: Record<string, unknown> | undefined;
    do {
      const result = await this.send('Query', () =>
        this.client.send(
          new QueryCommand({
            TableName: this.tableName,
            KeyConditionExpression: 'PK = :pk AND begins_with(SK, :links)',
            ExpressionAttributeValues: { ':pk': `DEVICE#${deviceId}`, ':links': CERTIFICATE_LINK_PREFIX },
            ProjectionExpression: 'certificateId',
            ConsistentRead: true,
            ExclusiveStartKey: startKey,
          }),
        ),
      );
      for (const item of result.Items ?? []) certificateIds.push(String(item.certificateId));
      startKey = result.LastEvaluatedKey;
    } while (startKey);
    return this.getCertificates(certificateIds);
  }

  /** The records of these certificates (read consistently), in the order given; unknown ids are skipped. */
  public async getCertificates(certificateIds: readonly string[]): Promise<CertificateRecord[]> {
    const found = new Map<string, CertificateRecord>();
    for (let start = 0; start < certificateIds.length; start += MAX_BATCH_GET_KEYS) {
      for (const item of await this.batchGet(certificateIds.slice(start, start + MAX_BATCH_GET_KEYS).map(certificateKey))) {
        const record = stripStorage(item) as unknown as CertificateRecord;
        found.set(record.certificateId, record);
      }
    }
    // Keep the caller's order (oldest first on a device).
    return certificateIds.flatMap((id) => found.get(id) ?? []);
  }

  /** The items found under these keys (at most MAX_BATCH_GET_KEYS), read consistently; unprocessed keys are asked again with backoff. */
  private async batchGet(keys: readonly Record<string, unknown>[]): Promise<Record<string, unknown>[]> {
    const items: Record<string, unknown>[] = [];
    let pending: Record<string, unknown>[] | undefined = [...keys];
    for (let round = 0; pending && pending.length > 0; round += 1) {
      if (round > 0) await sleep(Math.min(1000, 50 * 2 ** round));
      const requestKeys: Record<string, unknown>[] = pending;
      const result = await this.send('BatchGetItem', () =>
        this.client.send(new BatchGetCommand({ RequestItems: { [this.tableName]: { Keys: requestKeys, ConsistentRead: true } } })),
      );
      items.push(...(result.Responses?.[this.tableName] ?? []));
      pending = result.UnprocessedKeys?.[this.tableName]?.Keys as Record<string, unknown>[] | undefined;
    }
    return items;
  }

  /**
   * With a status: one Query of the ByStatus index. Without: the index walked state by state (in
   * `DEVICE_STATUSES` order), each state's devices by device id, with no Scan of the table: the page token
   * records which state (`bucket`) and where in it (`key`). A device whose state changes while a listing
   * walks may be seen twice or not at all, as with any paged read of a changing set.
   */
  public async listDevices(query: ListDevicesQuery): Promise<Page<Device>> {
    if (query.status === undefined) return this.listAllDevices(query);
    const { status } = query;
    const { indexName, partitionKey } = DEVICE_TABLE_SCHEMA.byStatusIndex;
    const token = decodeToken(query.nextToken, `status:${status}`, {
      index: DEVICE_TABLE_SCHEMA.byStatusIndex,
      inQuery: (key) => key[partitionKey] === `STATUS#${status}`,
    });
    const result = await this.send('Query', () =>
      this.client.send(
        new QueryCommand({
          TableName: this.tableName,
          IndexName: indexName,
          KeyConditionExpression: '#pk = :pk',
          ExpressionAttributeNames: { '#pk': partitionKey },
          ExpressionAttributeValues: { ':pk': `STATUS#${status}` },
          Limit: query.limit,
          ExclusiveStartKey: token?.key,
        }),
      ),
    );
    return {
      items: (result.Items ?? []).map((item) => stripStorage(item) as unknown as Device),
      ...(result.LastEvaluatedKey ? { nextToken: encodeToken({ scope: `status:${status}`, key: result.LastEvaluatedKey }) } : {}),
    };
  }

  /** Every device: the ByStatus index, one state's partition after the other. */
  private async listAllDevices(query: ListDevicesQuery): Promise<Page<Device>> {
    const { indexName, partitionKey } = DEVICE_TABLE_SCHEMA.byStatusIndex;
    const token = decodeToken(query.nextToken, ALL_DEVICES_SCOPE, {
      index: DEVICE_TABLE_SCHEMA.byStatusIndex,
      keyOptional: true,
      inQuery: (key, { bucket = 0 }) => key[partitionKey] === statusPartition(bucket),
    });
    if (token !== undefined && (token.bucket ?? 0) >= DEVICE_STATUSES.length) {
      throw new ValidationError('INVALID_REQUEST', 'nextToken is not valid for this query: pass the token from the previous page of the same query.');
    }
    const page = await this.walkPartitions<Device>({
      indexName,
      partitions: DEVICE_STATUSES.map((status) => `STATUS#${status}`),
      keyCondition: '#pk = :pk',
      names: { '#pk': partitionKey },
      values: {},
      limit: query.limit,
      start: { bucket: token?.bucket ?? 0, key: token?.key },
    });
    return { items: page.items, ...(page.next ? { nextToken: encodeToken({ scope: ALL_DEVICES_SCOPE, bucket: page.next.bucket, ...(page.next.key ? { key: page.next.key } : {}) }) } : {}) };
  }

  public async findCertificatesExpiring(query: ExpiringCertificatesQuery): Promise<Page<CertificateRecord>> {
    const { indexName, partitionKey, sortKey } = DEVICE_TABLE_SCHEMA.byExpiryIndex;
    const scope = `expiry:${query.notBefore.toISOString()}:${query.before.toISOString()}`;
    const token = decodeToken(query.nextToken, scope, {
      index: DEVICE_TABLE_SCHEMA.byExpiryIndex,
      keyOptional: true,
      inQuery: (key, { bucket = 0 }) =>
        key[partitionKey] === monthBuckets(query.notBefore, query.before)[bucket] &&
        (key[sortKey] ?? '') >= query.notBefore.toISOString() &&
        (key[sortKey] ?? '') <= query.before.toISOString(),
    });
    if (!Number.isInteger(query.limit) || query.limit < 1) throw new ValidationError('INVALID_REQUEST', 'limit must be a positive whole number.');
    const buckets = monthBuckets(query.notBefore, query.before);
    if (buckets.length > MAX_EXPIRY_BUCKETS) throw new ValidationError('INVALID_REQUEST', `The expiry window may span at most ${MAX_EXPIRY_BUCKETS} months.`);
    const page = await this.walkPartitions<CertificateRecord>({
      indexName,
      partitions: buckets,
      keyCondition: '#pk = :pk AND #sk BETWEEN :from AND :to',
      names: { '#pk': partitionKey, '#sk': sortKey },
      values: { ':from': query.notBefore.toISOString(), ':to': query.before.toISOString() },
      limit: query.limit,
      start: { bucket: token?.bucket ?? 0, key: token?.key },
    });
    return { items: page.items, ...(page.next ? { nextToken: encodeToken({ scope, bucket: page.next.bucket, key: page.next.key }) } : {}) };
  }

  public async findRotationsDue(query: RotationsDueQuery): Promise<Page<Device>> {
    const { indexName, partitionKey, sortKey } = DEVICE_TABLE_SCHEMA.byExpiryIndex;
    // Sort keys are `<deadline>#<deviceId>`: every key of a deadline at `before` sorts below `<before>#\uffff`.
    const upTo = `${query.before.toISOString()}#\uffff`;
    const scope = `rotations:${query.before.toISOString()}`;
    const token = decodeToken(query.nextToken, scope, {
      index: DEVICE_TABLE_SCHEMA.byExpiryIndex,
      inQuery: (key) => key[partitionKey] === ROTATIONS_PARTITION && (key[sortKey] ?? '') <= upTo,
    });
    if (!Number.isInteger(query.limit) || query.limit < 1) throw new ValidationError('INVALID_REQUEST', 'limit must be a positive whole number.');
    const page = await this.walkPartitions<Device>({
      indexName,
      partitions: [ROTATIONS_PARTITION],
      keyCondition: '#pk = :pk AND #sk <= :to',
      names: { '#pk': partitionKey, '#sk': sortKey },
      values: { ':to': upTo },
      limit: query.limit,
      start: { bucket: 0, key: token?.key },
    });
    return { items: page.items, ...(page.next?.key ? { nextToken: encodeToken({ scope, key: page.next.key }) } : {}) };
  }

  /**
   * Reads an index partition after partition (`:pk` each in turn), from `start`, until `limit` items: the one paged walk
   * behind listing every device (state by state) and expiring certificates (month by month). `next` is where the
   * following page starts, absent when every partition was read to its end.
   */
  private async walkPartitions<T>(walk: {
    readonly indexName: string;
    readonly partitions: readonly string[];
    readonly keyCondition: string;
    readonly names: Record<string, string>;
    readonly values: Record<string, unknown>;
    readonly limit: number;
    readonly start: { readonly bucket: number; readonly key?: Record<string, unknown> };
  }): Promise<{ items: T[]; next?: { bucket: number; key?: Record<string, unknown> } }> {
    const items: T[] = [];
    let bucket = walk.start.bucket;
    let startKey = walk.start.key;
    while (bucket < walk.partitions.length && items.length < walk.limit) {
      const partition = walk.partitions[bucket] as string;
      const result = await this.send('Query', () =>
        this.client.send(
          new QueryCommand({
            TableName: this.tableName,
            IndexName: walk.indexName,
            KeyConditionExpression: walk.keyCondition,
            ExpressionAttributeNames: walk.names,
            ExpressionAttributeValues: { ...walk.values, ':pk': partition },
            Limit: walk.limit - items.length,
            ExclusiveStartKey: startKey,
          }),
        ),
      );
      items.push(...(result.Items ?? []).map((item) => stripStorage(item) as unknown as T));
      if (result.LastEvaluatedKey) {
        startKey = result.LastEvaluatedKey;
      } else {
        bucket += 1;
        startKey = undefined;
      }
    }
    return { items, ...(bucket < walk.partitions.length ? { next: { bucket, ...(startKey ? { key: startKey } : {}) } } : {}) };
  }

  public async commit(change: StoreChange): Promise<void> {
    const transactItems: NonNullable<TransactWriteCommandInput['TransactItems']> = [];
    const labels: string[] = [];
    if (change.operation) {
      transactItems.push({ Put: this.versionedPut(operationItem(change.operation.next), change.operation.expectedVersion) });
      labels.push(`operation ${change.operation.next.operationId}`);
    }
    if (change.device) {
      transactItems.push({ Put: this.versionedPut(deviceItem(change.device.next), change.device.expectedVersion) });
      labels.push(`device ${change.device.next.deviceId}`);
    }
    for (const certificate of change.certificates ?? []) {
      transactItems.push({ Put: this.versionedPut(certificateItem(certificate.next), certificate.expectedVersion) });
      labels.push(`certificate ${certificate.next.certificateId}`);
      if (certificate.expectedVersion === undefined && certificate.next.deviceId !== undefined) {
        transactItems.push({ Put: { TableName: this.tableName, Item: { ...certificateLinkKey(certificate.next), itemType: 'CertificateLink', certificateId: certificate.next.certificateId } } });
        labels.push(`link of certificate ${certificate.next.certificateId}`);
      }
    }
    if (change.deviceUnchanged) {
      transactItems.push({
        ConditionCheck: {
          TableName: this.tableName,
          Key: deviceKey(change.deviceUnchanged.deviceId),
          ConditionExpression: '#version = :expectedVersion',
          ExpressionAttributeNames: { '#version': 'version' },
          ExpressionAttributeValues: { ':expectedVersion': change.deviceUnchanged.version },
        },
      });
      labels.push(`device ${change.deviceUnchanged.deviceId} unchanged`);
    }
    for (const event of change.events) {
      transactItems.push({ Put: { TableName: this.tableName, Item: eventItem(event), ConditionExpression: 'attribute_not_exists(PK)' } });
      labels.push(`event ${event.eventId}`);
    }
    if (transactItems.length === 0) return;
    const [only] = transactItems;
    if (transactItems.length === 1 && only?.Put) return this.conditionalPut(only.Put, labels[0] as string);
    if (transactItems.length > MAX_TRANSACTION_ITEMS) {
      throw new Error(`A change may write at most ${MAX_TRANSACTION_ITEMS} items; this one writes ${transactItems.length}.`);
    }
    try {
      await this.client.send(new TransactWriteCommand({ TransactItems: transactItems }));
    } catch (error) {
      if (!(error instanceof TransactionCanceledException)) throw toUpstreamError(error, 'DynamoDB', 'TransactWriteItems');
      const reasons = error.CancellationReasons ?? [];
      const failed = reasons.flatMap((reason, index) => (reason.Code && reason.Code !== 'None' ? [`${labels[index] ?? index}: ${reason.Code}`] : []));
      if (reasons.some((reason) => reason.Code === 'ConditionalCheckFailed' || reason.Code === 'TransactionConflict')) {
        // Which records lost stays in the cause (for logs); callers get a plain message.
        throw new ConflictError('Another change to the same device or certificate was written first; read it again and retry.', {
          cause: new Error(`transaction cancelled: ${failed.join(', ')}`, { cause: error }),
        });
      }
      throw toUpstreamError(error, 'DynamoDB', 'TransactWriteItems');
    }
  }

  /** One record written on its condition: the same guarantee as a one-item transaction, for half the write units. */
  private async conditionalPut(put: NonNullable<NonNullable<TransactWriteCommandInput['TransactItems']>[number]['Put']>, label: string): Promise<void> {
    try {
      await this.client.send(new PutCommand(put));
    } catch (error) {
      if (error instanceof ConditionalCheckFailedException) {
        throw new ConflictError('Another change to the same device or certificate was written first; read it again and retry.', {
          cause: new Error(`conditional write failed: ${label}`, { cause: error }),
        });
      }
      throw toUpstreamError(error, 'DynamoDB', 'PutItem');
    }
  }

  /**
   * One conditional PutItem (the record must not exist yet) that answers, on conflict, the record already stored: DynamoDB
   * returns it with the refusal (`ReturnValuesOnConditionCheckFailure`), so a new operation costs one write and no read.
   */
  public async createOperation(record: OperationRecord): Promise<OperationRecord | undefined> {
    try {
      await this.client.send(
        new PutCommand({
          TableName: this.tableName,
          Item: operationItem(record),
          ConditionExpression: 'attribute_not_exists(PK)',
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
        }),
      );
      return undefined;
    } catch (error) {
      if (!(error instanceof ConditionalCheckFailedException)) throw toUpstreamError(error, 'DynamoDB', 'PutItem');
      // The document client does not translate the item carried by an exception: it comes in DynamoDB's own attribute format.
      if (error.Item) return stripStorage(unmarshall(error.Item)) as unknown as OperationRecord;
      // A store that does not return it (the record expired between the check and the read is impossible: TTL only deletes).
      const stored = await this.getOperation(record.operationId);
      if (!stored) throw new ConflictError('The operation record was refused as existing but cannot be read; retry.', { cause: error });
      return stored;
    }
  }

  /**
   * Version 0.1.0 kept a device's certificates as a list on the device item (`certificateIds`); this version finds them
   * by their links. Writes the missing links and drops the list, device by device, each on condition that the device
   * did not change meanwhile. Safe to run again; answers how many devices it migrated.
   */
  public async migrateCertificateLists(): Promise<number> {
    let migrated = 0;
    let startKey: Record<string, unknown> | undefined;
    do {
      const page = await this.send('Scan', () =>
        this.client.send(
          new ScanCommand({
            TableName: this.tableName,
            FilterExpression: 'itemType = :device AND attribute_exists(certificateIds)',
            ExpressionAttributeValues: { ':device': 'Device' },
            ConsistentRead: true,
            ExclusiveStartKey: startKey,
          }),
        ),
      );
      for (const item of page.Items ?? []) {
        const { certificateIds, ...device } = stripStorage(item) as unknown as Device & { certificateIds?: string[] };
        const certificates = await this.getCertificates(certificateIds ?? []);
        for (let start = 0; start < certificates.length; start += MAX_TRANSACTION_ITEMS - 1) {
          const links = certificates.slice(start, start + MAX_TRANSACTION_ITEMS - 1).map((certificate) => ({
            Put: { TableName: this.tableName, Item: { ...certificateLinkKey({ ...certificate, deviceId: device.deviceId }), itemType: 'CertificateLink', certificateId: certificate.certificateId } },
          }));
          const last = start + MAX_TRANSACTION_ITEMS - 1 >= certificates.length;
          // The device item, without its list, goes with the last links: until then a rerun finds the list and finishes.
          const deviceWrite = last ? [{ Put: this.versionedPut(deviceItem(device), device.version) }] : [];
          await this.send('TransactWriteItems', () => this.client.send(new TransactWriteCommand({ TransactItems: [...links, ...deviceWrite] })));
        }
        if (certificates.length === 0) await this.send('TransactWriteItems', () => this.client.send(new TransactWriteCommand({ TransactItems: [{ Put: this.versionedPut(deviceItem(device), device.version) }] })));
        migrated += 1;
      }
      startKey = page.LastEvaluatedKey;
    } while (startKey);
    return migrated;
  }

  public async getOperation(operationId: string): Promise<OperationRecord | undefined> {
    const { Item } = await this.send('GetItem', () =>
      this.client.send(new GetCommand({ TableName: this.tableName, Key: operationKey(operationId), ConsistentRead: true })),
    );
    return Item ? (stripStorage(Item) as unknown as OperationRecord) : undefined;
  }

  private versionedPut(item: Record<string, unknown>, expectedVersion: number | undefined) {
    return expectedVersion === undefined
      ? { TableName: this.tableName, Item: item, ConditionExpression: 'attribute_not_exists(PK)' }
      : {
          TableName: this.tableName,
          Item: item,
          ConditionExpression: '#version = :expectedVersion',
          ExpressionAttributeNames: { '#version': 'version' },
          ExpressionAttributeValues: { ':expectedVersion': expectedVersion },
        };
  }

  private async latestEvents(partition: string, limit: number): Promise<AuditEvent[]> {
    if (limit <= 0) return [];
    const result = await this.send('Query', () =>
      this.client.send(
        new QueryCommand({
          TableName: this.tableName,
          KeyConditionExpression: 'PK = :pk AND begins_with(SK, :events)',
          ExpressionAttributeValues: { ':pk': partition, ':events': 'EVENT#' },
          ScanIndexForward: false,
          Limit: limit,
          ConsistentRead: true,
        }),
      ),
    );
    return (result.Items ?? []).map((item) => stripStorage(item) as unknown as AuditEvent);
  }

  private async send<T>(operation: string, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      throw toUpstreamError(error, 'DynamoDB', operation);
    }
  }
}

function operationItem(operation: OperationRecord): Record<string, unknown> {
  // Kept OPERATION_RETENTION_DAYS after its last write (DynamoDB's TTL deletes it then).
  return { ...operationKey(operation.operationId), itemType: 'Operation', expiresAt: Math.floor(Date.parse(operation.updatedAt) / 1000) + OPERATION_RETENTION_DAYS * 86_400, ...operation };
}

/** The ByExpiry partition of devices with a rotation in flight, sorted by commit deadline (a handful at a time: one partition is enough). */
const ROTATIONS_PARTITION = 'ROTATION';

function deviceItem(device: Device): Record<string, unknown> {
  const rotation = device.rotation ? { GSI2PK: ROTATIONS_PARTITION, GSI2SK: `${device.rotation.commitDeadline}#${device.deviceId}` } : {};
  return { ...deviceKey(device.deviceId), itemType: 'Device', GSI1PK: `STATUS#${device.status}`, GSI1SK: device.deviceId, ...rotation, ...device };
}

function certificateItem(certificate: CertificateRecord): Record<string, unknown> {
  const expiry = isLiveCertificateStatus(certificate.status)
    ? { GSI2PK: `EXPIRY#${certificate.notAfter.slice(0, 7)}`, GSI2SK: `${certificate.notAfter}#${certificate.certificateId}` }
    : {};
  return { ...certificateKey(certificate.certificateId), itemType: 'Certificate', ...expiry, ...certificate };
}

function eventItem(event: AuditEvent): Record<string, unknown> {
  const partition = event.deviceId ? `DEVICE#${event.deviceId}` : `CERTIFICATE#${event.certificateId ?? 'unknown'}`;
  return { PK: partition, SK: `EVENT#${event.at}#${event.eventId}`, itemType: 'AuditEvent', ...event };
}

function stripStorage(item: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(item).filter(([name]) => !STORAGE_ATTRIBUTES.includes(name)));
}

/** `EXPIRY#yyyy-mm` buckets from the month of `from` to the month of `to`, inclusive. */
function monthBuckets(from: Date, to: Date): string[] {
  const buckets: string[] = [];
  const cursor = new Date(Date.UTC(from.getUTCFullYear(), from.getUTCMonth(), 1));
  while (cursor.getTime() <= to.getTime()) {
    buckets.push(`EXPIRY#${cursor.toISOString().slice(0, 7)}`);
    cursor.setUTCMonth(cursor.getUTCMonth() + 1);
  }
  return buckets;
}

/** An expiry window longer than this many months is refused (certificates live at most years). */
const MAX_EXPIRY_BUCKETS = 240;
/** DynamoDB's limit on a sort key value; every key this table writes is far shorter. */
const MAX_KEY_VALUE_BYTES = 1024;

/** The scope of a listing of every device; its token's `bucket` is the index in `DEVICE_STATUSES` of the state it is in. */
const ALL_DEVICES_SCOPE = 'all-devices';
/** The ByStatus partition of the `bucket`-th state; undefined past the last. */
const statusPartition = (bucket: number): string | undefined => (DEVICE_STATUSES[bucket] === undefined ? undefined : `STATUS#${DEVICE_STATUSES[bucket]}`);

interface PageToken {
  readonly scope: string;
  readonly bucket?: number;
  readonly key?: Record<string, unknown>;
}

/**
 * The key a page token must carry to continue one query on one index: exactly the attributes of the
 * LastEvaluatedKey DynamoDB gives for it (the table's key and the index's), inside what the query reads.
 * DynamoDB refuses any other ExclusiveStartKey, which would otherwise surface as a 502.
 */
interface PageKeyShape {
  readonly index: { readonly partitionKey: string; readonly sortKey: string };
  /** Whether the key lies in the partition (and sort key range) the query reads, `token.bucket` included. */
  readonly inQuery: (key: Readonly<Record<string, string>>, token: PageToken) => boolean;
  /** A token may come without a key (the expiry query's next bucket starts from its beginning). */
  readonly keyOptional?: boolean;
}

const encodeToken = (token: PageToken): string => Buffer.from(JSON.stringify(token), 'utf8').toString('base64url');

/** A token only continues the query it came from; anything else is the caller's mistake, said plainly. */
function decodeToken(nextToken: string | undefined, scope: string, shape: PageKeyShape): PageToken | undefined {
  if (nextToken === undefined) return undefined;
  let token: unknown;
  try {
    token = JSON.parse(Buffer.from(nextToken, 'base64url').toString('utf8'));
  } catch {
    token = undefined;
  }
  const candidate = token as PageToken | undefined;
  const attributes = [DEVICE_TABLE_SCHEMA.partitionKey, DEVICE_TABLE_SCHEMA.sortKey, shape.index.partitionKey, shape.index.sortKey];
  const isKeyValue = (value: unknown) => typeof value === 'string' && value !== '' && Buffer.byteLength(value, 'utf8') <= MAX_KEY_VALUE_BYTES;
  const keyIsValid = (key: unknown, token: PageToken): boolean => {
    if (key === undefined) return shape.keyOptional === true;
    if (typeof key !== 'object' || key === null || Array.isArray(key)) return false;
    const record = key as Record<string, unknown>;
    const hasExactlyTheAttributes = Object.keys(record).length === attributes.length && attributes.every((name) => Object.hasOwn(record, name) && isKeyValue(record[name]));
    return hasExactlyTheAttributes && shape.inQuery(record as Record<string, string>, token);
  };
  const bucketIsValid = (bucket: unknown) => bucket === undefined || (Number.isInteger(bucket) && (bucket as number) >= 0 && (bucket as number) <= MAX_EXPIRY_BUCKETS);
  if (!candidate || typeof candidate !== 'object' || candidate.scope !== scope || !bucketIsValid(candidate.bucket) || !keyIsValid(candidate.key, candidate)) {
    throw new ValidationError('INVALID_REQUEST', 'nextToken is not valid for this query: pass the token from the previous page of the same query.');
  }
  return candidate;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
