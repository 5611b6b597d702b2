/**
 * How the local mode delivers registration events to the JITR function: the delivery id it gives each
 * delivery, and how it hands back one that finds the activation held by another delivery. Apart from
 * `local-mode.ts` so tests can use them without loading the broker.
 */

/**
 * The delivery id (the Lambda request id the JITR handler passes to the core) of every delivery of a
 * certificate's registration event. The local mode runs one delivery of a certificate at a time, so a
 * claim held under this id is one an earlier delivery left (a crash, a second Ctrl-C): the core lets
 * the next delivery take it over at once instead of waiting for its lease to run out.
 */
export const jitrDeliveryId = (certificateId: string): string => `local:${certificateId}`;

/**
 * A delivery answered IN_PROGRESS (another delivery holds the certificate's activation lease) is handed
 * to the function again after this delay, as SQS does after the visibility timeout, until the lease
 * (60 s) has run out: 20 × 5 s.
 */
export const JITR_REDELIVERY_DELAY_MS = 5_000;
export const JITR_MAX_REDELIVERIES = 20;
