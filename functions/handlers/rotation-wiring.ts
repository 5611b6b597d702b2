import type { Context, SQSBatchResponse, SQSEvent } from 'aws-lambda';
import { IotDataMessenger } from '../adapters/aws/iot-data-messenger';
import { awsRotation, LIFECYCLE_VARIABLES } from './aws-wiring';
import { readConfig } from './config';
import { createRotationHandler, type RotationDependencies, type RotationHandler, type RotationResult } from './rotation';

/** The rotation function's AWS wiring, built once per cold start. */
export function rotationDependencies(): RotationDependencies {
  const config = readConfig([...LIFECYCLE_VARIABLES, 'ROTATION_COMMIT_SECONDS', 'IOT_DATA_ENDPOINT']);
  return {
    lifecycle: awsRotation(config, { rotationCommitSeconds: config.ROTATION_COMMIT_SECONDS }),
    messenger: new IotDataMessenger(config.IOT_DATA_ENDPOINT ? { endpointHost: config.IOT_DATA_ENDPOINT } : {}),
  };
}

let awsHandler: RotationHandler | undefined;

/** The Lambda entry point: SQS batches of device messages, and the sweep's scheduled event. */
export const handler = async (event: SQSEvent | unknown, context: Context): Promise<SQSBatchResponse | RotationResult> => {
  awsHandler ??= createRotationHandler(rotationDependencies());
  return awsHandler(event, context);
};
