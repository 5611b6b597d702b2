import { DescribeEndpointCommand, IoTClient } from '@aws-sdk/client-iot';
import { IoTDataPlaneClient, PublishCommand } from '@aws-sdk/client-iot-data-plane';
import type { DeviceMessenger } from '../../core/ports';
import { retryingClientConfig, toUpstreamError } from './aws-errors';

/** The IAM actions the messenger calls: the account's ATS data endpoint once, then Publish per message. */
export const IOT_DATA_MESSENGER_IAM_ACTIONS = ['iot:DescribeEndpoint', 'iot:Publish'] as const;

export interface IotDataMessengerOptions {
  /**
   * The account's `iot:Data-ATS` endpoint host (what `aws iot describe-endpoint --endpoint-type iot:Data-ATS` answers).
   * @default - asked of AWS IoT once, at the first message
   */
  readonly endpointHost?: string;
  /** @default - a client built with `retryingClientConfig` */
  readonly iotClient?: IoTClient;
  /** Builds the data-plane client for an endpoint; injectable for tests. */
  readonly dataClientFor?: (endpoint: string) => IoTDataPlaneClient;
}

/**
 * Messages to devices through AWS IoT's data plane (HTTPS Publish, QoS 1), as a device's subscriptions and its
 * policy's `iot:Receive` decide. The data plane is reached on the account's ATS endpoint, found once per cold start.
 */
export class IotDataMessenger implements DeviceMessenger {
  private client: Promise<IoTDataPlaneClient> | undefined;

  public constructor(private readonly options: IotDataMessengerOptions = {}) {}

  public async publish(topic: string, message: Readonly<Record<string, unknown>>): Promise<void> {
    const client = await this.dataClient();
    try {
      await client.send(new PublishCommand({ topic, qos: 1, payload: Buffer.from(JSON.stringify(message), 'utf8'), contentType: 'application/json' }));
    } catch (error) {
      throw toUpstreamError(error, 'AWS IoT', 'Publish');
    }
  }

  private dataClient(): Promise<IoTDataPlaneClient> {
    this.client ??= this.resolveEndpoint().then((host) => (this.options.dataClientFor ?? ((endpoint) => new IoTDataPlaneClient({ ...retryingClientConfig, endpoint })))(`https://${host}`));
    // A failed lookup is not kept: the next message asks again.
    this.client.catch(() => {
      this.client = undefined;
    });
    return this.client;
  }

  private async resolveEndpoint(): Promise<string> {
    if (this.options.endpointHost) return this.options.endpointHost;
    const iot = this.options.iotClient ?? new IoTClient(retryingClientConfig);
    try {
      const { endpointAddress } = await iot.send(new DescribeEndpointCommand({ endpointType: 'iot:Data-ATS' }));
      if (!endpointAddress) throw new Error('DescribeEndpoint answered no endpoint address');
      return endpointAddress;
    } catch (error) {
      throw toUpstreamError(error, 'AWS IoT', 'DescribeEndpoint');
    }
  }
}
