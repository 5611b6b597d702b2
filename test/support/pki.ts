import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';

const provider = webcrypto as unknown as Crypto;

export type KeySpec = 'EC_P256' | 'EC_P384' | 'EC_P521' | 'RSA_1024' | 'RSA_2048';

const KEY_ALGORITHMS: Record<KeySpec, { generate: EcKeyGenParams | RsaHashedKeyGenParams; sign: Algorithm | EcdsaParams }> = {
  EC_P256: { generate: { name: 'ECDSA', namedCurve: 'P-256' }, sign: { name: 'ECDSA', hash: 'SHA-256' } as EcdsaParams },
  EC_P384: { generate: { name: 'ECDSA', namedCurve: 'P-384' }, sign: { name: 'ECDSA', hash: 'SHA-384' } as EcdsaParams },
  EC_P521: { generate: { name: 'ECDSA', namedCurve: 'P-521' }, sign: { name: 'ECDSA', hash: 'SHA-512' } as EcdsaParams },
  RSA_1024: {
    generate: { name: 'RSASSA-PKCS1-v1_5', modulusLength: 1024, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
    sign: { name: 'RSASSA-PKCS1-v1_5' },
  },
  RSA_2048: {
    generate: { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
    sign: { name: 'RSASSA-PKCS1-v1_5' },
  },
};

export async function generateKeys(spec: KeySpec = 'EC_P256'): Promise<CryptoKeyPair> {
  return (await provider.subtle.generateKey(KEY_ALGORITHMS[spec].generate, true, ['sign', 'verify'])) as CryptoKeyPair;
}

export interface CsrOptions {
  readonly keySpec?: KeySpec;
  readonly keys?: CryptoKeyPair;
  readonly subject?: string;
  readonly extensions?: x509.Extension[];
}

/** A real PKCS#10 request for `CN=<commonName>`, made with @peculiar/x509. */
export async function makeCsr(commonName: string, options: CsrOptions = {}): Promise<{ csrPem: string; keys: CryptoKeyPair }> {
  const spec = options.keySpec ?? 'EC_P256';
  const keys = options.keys ?? (await generateKeys(spec));
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    { name: options.subject ?? `CN=${commonName}`, keys, signingAlgorithm: KEY_ALGORITHMS[spec].sign, extensions: options.extensions },
    provider,
  );
  return { csrPem: csr.toString('pem'), keys };
}

/** The same CSR with one bit of its signature flipped: well-formed, but the signature no longer verifies. */
export function withBrokenSignature(csrPem: string): string {
  const der = Buffer.from(x509.PemConverter.decodeFirst(csrPem));
  der[der.length - 1] = (der[der.length - 1] ?? 0) ^ 0x01;
  return x509.PemConverter.encode(der, 'CERTIFICATE REQUEST');
}

export async function privateKeyPem(keys: CryptoKeyPair): Promise<string> {
  return x509.PemConverter.encode(await provider.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY');
}

/** A self-signed CA that is not ours: its certificates must be refused. */
export async function makeForeignCa(): Promise<{ certificatePem: string; issue: (commonName: string) => Promise<string> }> {
  const keys = await generateKeys('EC_P256');
  const ca = await x509.X509CertificateGenerator.createSelfSigned(
    { name: 'CN=Someone else', keys, signingAlgorithm: KEY_ALGORITHMS.EC_P256.sign, extensions: [new x509.BasicConstraintsExtension(true, 0, true)] },
    provider,
  );
  return {
    certificatePem: ca.toString('pem'),
    issue: async (commonName: string) => {
      const deviceKeys = await generateKeys('EC_P256');
      const certificate = await x509.X509CertificateGenerator.create(
        {
          subject: `CN=${commonName}`,
          issuer: ca.subject,
          publicKey: deviceKeys.publicKey,
          signingKey: keys.privateKey,
          signingAlgorithm: KEY_ALGORITHMS.EC_P256.sign,
          notBefore: new Date(Date.now() - 60_000),
          notAfter: new Date(Date.now() + 86_400_000),
        },
        provider,
      );
      return certificate.toString('pem');
    },
  };
}
