/** XEP-0115 verification strings, checked against the XEP's own examples (§5.2, §5.3). */
import { describe, expect, it } from 'vitest';
import { capsOf, capsVer, verificationString } from '../../shared/caps.ts';
import { parseFrame } from '../../shared/xml/parse.ts';

const simple = parseFrame(
  `<query xmlns='http://jabber.org/protocol/disco#info'>
    <identity category='client' name='Exodus 0.9.1' type='pc'/>
    <feature var='http://jabber.org/protocol/disco#info'/>
    <feature var='http://jabber.org/protocol/disco#items'/>
    <feature var='http://jabber.org/protocol/muc'/>
    <feature var='http://jabber.org/protocol/caps'/>
  </query>`,
);

const complex = parseFrame(
  `<query xmlns='http://jabber.org/protocol/disco#info' node='http://psi-im.org#q07IKJEyjvHSyhy//CH0CxmKi8w='>
    <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>
    <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>
    <feature var='http://jabber.org/protocol/caps'/>
    <feature var='http://jabber.org/protocol/disco#info'/>
    <feature var='http://jabber.org/protocol/disco#items'/>
    <feature var='http://jabber.org/protocol/muc'/>
    <x xmlns='jabber:x:data' type='result'>
      <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>
      <field var='ip_version' type='text-multi'><value>ipv6</value><value>ipv4</value></field>
      <field var='os'><value>Mac</value></field>
      <field var='os_version'><value>10.5.1</value></field>
      <field var='software'><value>Psi</value></field>
      <field var='software_version'><value>0.11</value></field>
    </x>
  </query>`,
);

describe('XEP-0115 verification string', () => {
  it('hashes the simple example to QgayPKawpkPSDYmwT/WM94uAlu0=', () => {
    expect(verificationString(simple)).toBe(
      'client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<',
    );
    expect(capsVer(simple)).toBe('QgayPKawpkPSDYmwT/WM94uAlu0=');
  });

  it('hashes the complex example (languages, extended form, unsorted values) to q07IKJEyjvHSyhy//CH0CxmKi8w=', () => {
    expect(capsVer(complex)).toBe('q07IKJEyjvHSyhy//CH0CxmKi8w=');
  });

  it('refuses ill-formed results: duplicate features or identities', () => {
    const dup = parseFrame(`<query xmlns='http://jabber.org/protocol/disco#info'><feature var='a'/><feature var='a'/></query>`);
    expect(capsVer(dup)).toBeUndefined();
    const dupId = parseFrame(`<query xmlns='http://jabber.org/protocol/disco#info'><identity category='c' type='t'/><identity category='c' type='t'/></query>`);
    expect(capsVer(dupId)).toBeUndefined();
  });

  it('supports sha-256 and rejects unknown algorithms', () => {
    expect(capsVer(simple, 'sha-256')).toMatch(/^[A-Za-z0-9+/]{43}=$/);
    expect(capsVer(simple, 'md5')).toBeUndefined();
  });

  it('reads <c/> from presence only with a hash it can verify', () => {
    const c = (attrs: string) => parseFrame(`<presence xmlns='jabber:client'><c xmlns='http://jabber.org/protocol/caps' ${attrs}/></presence>`);
    expect(capsOf(c(`hash='sha-1' node='n' ver='v'`))).toEqual({ hash: 'sha-1', node: 'n', ver: 'v' });
    expect(capsOf(c(`node='n' ver='v' ext='legacy'`))).toBeUndefined();
    expect(capsOf(c(`hash='md5' node='n' ver='v'`))).toBeUndefined();
  });
});
