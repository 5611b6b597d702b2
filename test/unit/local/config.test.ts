import { resolve } from 'node:path';
import { DEFAULT_DATA_DIR, LocalConfigError, parseLocalModeConfig, usage } from '../../../local/config';

describe('parseLocalModeConfig', () => {
  test('defaults: .local in the repository, 8883, 3000, 3001, DynamoDB Local on 8000, open enrollment', () => {
    expect(parseLocalModeConfig([], {})).toEqual({
      dataDir: DEFAULT_DATA_DIR,
      mqttPort: 8883,
      apiPort: 3000,
      crlPort: 3001,
      dynamodbPort: 8000,
      tablePrefix: 'iotcert-local',
      enrollmentPolicy: 'open',
      validityDays: 365,
      jitrConcurrency: 16,
      verbose: false,
      rotationCommitSeconds: 6 * 3600,
      rotationSweepSeconds: 60,
    });
  });

  test('a flag wins over its environment variable, which wins over the default', () => {
    const config = parseLocalModeConfig(['--mqtt-port', '0', '--data-dir', 'tmp/data'], { IOTCERT_MQTT_PORT: '1883', IOTCERT_API_PORT: '4000', IOTCERT_VERBOSE: 'true' });

    expect(config).toMatchObject({ mqttPort: 0, apiPort: 4000, crlPort: 3001, dataDir: resolve('tmp/data'), verbose: true });
  });

  test('answers HELP for --help', () => {
    expect(parseLocalModeConfig(['--help'], {})).toBe('HELP');
    expect(usage()).toContain('--mqtt-port <value>');
  });

  test.each([
    [['--mqtt-port', '70000'], {}, '--mqtt-port / IOTCERT_MQTT_PORT "70000"'],
    [[], { IOTCERT_ENROLLMENT_POLICY: 'closed' }, '--enrollment-policy / IOTCERT_ENROLLMENT_POLICY "closed"'],
    [['--dynamodb-endpoint', 'http://dynamodb.example.com:8000'], {}, 'must be http://127.0.0.1:<port>'],
    [['--validity-days', '0'], {}, '--validity-days / IOTCERT_VALIDITY_DAYS "0"'],
  ])('fails on a malformed value, naming the flag and variable: %j %j', (argv, env, message) => {
    expect(() => parseLocalModeConfig(argv, env)).toThrow(LocalConfigError);
    expect(() => parseLocalModeConfig(argv, env)).toThrow(message);
  });

  test('fails on an unknown flag', () => {
    expect(() => parseLocalModeConfig(['--mqtt-prot', '1'], {})).toThrow(/Unknown option '--mqtt-prot'/);
  });
});
