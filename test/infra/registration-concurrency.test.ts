import { App } from 'aws-cdk-lib';
import { stackPropsFromContext } from '../../infra/context';
import { InvalidConfigurationError, ONBOARDING_RATE, registrationConcurrencyFor, resolveSettings } from '../../infra/settings';
import { buildStack, functionLogicalId } from './stacks';

/** The JITR queue's concurrency: sized from the AWS IoT quota that binds onboarding, and configurable. */
describe('registration queue concurrency', () => {
  test('by default it is the value sized for DescribeCertificate\'s default quota, the lowest SQS accepts (2)', () => {
    // Prepare / Act
    const { template } = buildStack();
    // Assess
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      FunctionName: { Ref: functionLogicalId(template, 'LifecycleJitrFunction') },
      ScalingConfig: { MaximumConcurrency: registrationConcurrencyFor(ONBOARDING_RATE.describeCertificatePerSecond) },
    });
    expect(registrationConcurrencyFor(ONBOARDING_RATE.describeCertificatePerSecond)).toBe(2);
  });

  test('registrationConcurrency sets the JITR event source maximum concurrency and leaves the rotation queue alone', () => {
    const { template } = buildStack({ lifecycle: { registrationConcurrency: 12 } });
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', { FunctionName: { Ref: functionLogicalId(template, 'LifecycleJitrFunction') }, ScalingConfig: { MaximumConcurrency: 12 } });
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', { FunctionName: { Ref: functionLogicalId(template, 'LifecycleRotationFunction') }, ScalingConfig: { MaximumConcurrency: 2 } });
  });

  test.each([
    // rate (events/s) -> invocations: events in flight (rate x 0.3 s) over 10 events per invocation, at least 2
    [10, 2],
    [100, 3],
    [1000, 30],
    [100_000, 1000],
  ])('sustaining %d onboardings per second takes %d invocations', (rate, concurrency) => {
    expect(registrationConcurrencyFor(rate)).toBe(concurrency);
  });

  test('the registrationConcurrency context value (cdk -c) reaches the construct', () => {
    const props = stackPropsFromContext(new App(), { get: (name) => (name === 'registrationConcurrency' ? '6' : undefined), readFile: () => '' });
    expect(props.lifecycle?.registrationConcurrency).toBe(6);
  });

  test.each([1, 1001, 2.5])('rejects registrationConcurrency %p with a message naming the prop and the range', (value) => {
    expect(() => resolveSettings({ registrationConcurrency: value })).toThrow(InvalidConfigurationError);
    expect(() => resolveSettings({ registrationConcurrency: value })).toThrow(`registrationConcurrency must be a whole number from 2 to 1000 (got ${value})`);
  });
});
