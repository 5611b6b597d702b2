import { LifecycleError } from '../../functions/core/errors';

/** The `LifecycleError` the promise rejects with; fails the test when it resolves or rejects with anything else. */
export async function errorOf(promise: Promise<unknown>): Promise<LifecycleError> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof LifecycleError) return error;
    throw error;
  }
  throw new Error('expected a LifecycleError');
}
