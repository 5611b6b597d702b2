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

/** The extensions a CA puts in a device (TLS client) certificate: end entity, digitalSignature, clientAuth. */
export function deviceCertificateExtensions(): x509.Extension[] {
  return [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]),
  ];
}

export interface IssueOptions {
  /** @default `CN=<commonName>` */
  readonly subject?: string;
  /** @default deviceCertificateExtensions() */
  readonly extensions?: x509.Extension[];
  readonly keySpec?: KeySpec;
}

export interface TestCa {
  readonly certificatePem: string;
  /** A certificate this CA signs for a fresh key, valid from a minute ago for a day, with whatever subject and extensions asked for. */
  issue(commonName: string, options?: IssueOptions): Promise<string>;
}

/** A self-signed EC P-256 CA that signs anything: for certificates a real CA would never issue. */
export async function makeCa(commonName = 'Test CA'): Promise<TestCa> {
  const keys = await generateKeys('EC_P256');
  const ca = await x509.X509CertificateGenerator.createSelfSigned(
    { name: `CN=${commonName}`, keys, signingAlgorithm: KEY_ALGORITHMS.EC_P256.sign, extensions: [new x509.BasicConstraintsExtension(true, 0, true)] },
    provider,
  );
  return signerOf(ca, keys.privateKey);
}

/** The same, signing with an existing EC P-256 CA's key (e.g. the fleet CA of a test): our own CA misused. */
export async function caFromMaterial(material: { readonly certificatePem: string; readonly privateKeyPem: string }): Promise<TestCa> {
  const privateKey = await provider.subtle.importKey('pkcs8', x509.PemConverter.decodeFirst(material.privateKeyPem), { name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign']);
  return signerOf(new x509.X509Certificate(material.certificatePem), privateKey);
}

function signerOf(ca: x509.X509Certificate, signingKey: CryptoKey): TestCa {
  return {
    certificatePem: ca.toString('pem'),
    issue: async (deviceCommonName, options = {}) => {
      const deviceKeys = await generateKeys(options.keySpec ?? 'EC_P256');
      const certificate = await x509.X509CertificateGenerator.create(
        {
          subject: options.subject ?? `CN=${deviceCommonName}`,
          issuer: ca.subject,
          publicKey: deviceKeys.publicKey,
          signingKey,
          signingAlgorithm: KEY_ALGORITHMS.EC_P256.sign,
          notBefore: new Date(Date.now() - 60_000),
          notAfter: new Date(Date.now() + 86_400_000),
          extensions: options.extensions ?? deviceCertificateExtensions(),
        },
        provider,
      );
      return certificate.toString('pem');
    },
  };
}

/** A self-signed CA that is not ours: its certificates must be refused. */
export async function makeForeignCa(): Promise<{ certificatePem: string; issue: (commonName: string) => Promise<string> }> {
  const ca = await makeCa('Someone else');
  return { certificatePem: ca.certificatePem, issue: (commonName: string) => ca.issue(commonName, { extensions: [] }) };
}

/** The same PEM block (same label) with `extra` bytes appended after its DER: every parser still reads the DER. */
export function withTrailingBytes(pem: string, extra: readonly number[] = [0x05, 0x00]): string {
  const [block] = x509.PemConverter.decodeWithHeaders(pem);
  if (!block) throw new Error('withTrailingBytes needs a PEM block');
  return x509.PemConverter.encode(Buffer.concat([Buffer.from(block.rawData), Buffer.from(extra)]), block.type);
}
