import { IoTClient } from '@aws-sdk/client-iot';
import { mockClient, type AwsCommand } from 'aws-sdk-client-mock';

/*
 * Type bridge, types only: aws-sdk-client-mock (and its jest matchers) are typed against the top-level
 * @smithy/types, 2.x, which @aws-sdk/client-acm-pca 3.523 (the newest on the registry) brings; @aws-sdk/client-iot
 * 3.11xx is built on @smithy/types 4.x. TypeScript then sees two `Client`/`Command` shapes and refuses
 * `mockClient(IoTClient)` (m-radzikowski/aws-sdk-client-mock#197). At run time the stub and the commands are the real ones.
 * Remove the bridge once every @aws-sdk/* client is on the same release (one @smithy/types).
 */
export const mockIotClient = () => mockClient(IoTClient as unknown as Parameters<typeof mockClient>[0]);

/** What the stub's types call a command output (`MetadataBearer`). */
export type CommandOutput = { readonly $metadata: object };

/** An IoT SDK command class, typed the way the stub (and its matchers) accept it, input and output types kept. */
export const mockable = <I extends object, O extends CommandOutput>(command: new (input: I) => unknown) => command as unknown as new (input: I) => AwsCommand<I, O>;
