import { loggedTarget } from '../../../local/api-server';

describe('loggedTarget: what of a request target goes into a log line', () => {
  test.each([
    ['nothing but a path', '/devices/sensor-1', '/devices/sensor-1'],
    ['a query string, which may carry a token', '/devices?access_token=s3cret', '/devices?…'],
    ['a fragment', '/devices#s3cret', '/devices?…'],
    ['credentials, in absolute form', 'http://user:s3cret@127.0.0.1:3000/devices?token=s3cret', '/devices?…'],
    ['an absolute form that does not parse', 'http://user:s3cret@[nonsense/devices', '?'],
    ['a newline in its path (escaped)', '/devices/a\nb', '/devices/a\\nb'],
    ['nothing at all', undefined, '?'],
  ])('logs a target with %s as its path only', (_name, target, logged) => {
    expect(loggedTarget(target)).toBe(logged);
  });
});
