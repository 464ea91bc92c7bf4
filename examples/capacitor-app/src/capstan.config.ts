// Where this app gets its updates and whom it trusts. keys is the app's
// trust file: the release key's public half (capstan keys gen --out
// release.key writes release.key.pub) and the origin's key
// (DATA/origin/origin.key.pub), concatenated; `cat release.key.pub
// capstan-data/origin/origin.key.pub > src/trust.pem`.
import keys from './trust.pem?raw'

export const capstan = {
  app: 'com.example.capstan',
  channel: 'production',
  edges: ['https://updates.example.com'],
  keys,
  nativeVersion: '1.0.0',
}
