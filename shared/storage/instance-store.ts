/**
 * The stream-service instances that hold native client sockets, with a lease each, so the sockets
 * of an instance that died without a goodbye (a task killed, a host lost) do not leave sessions
 * that look online for ever. API Gateway sends $disconnect for every WebSocket it drops; for a TCP
 * socket only its instance could, so the others do it when its lease runs out:
 *
 *   c2s-instances / <mailbox address>   expiresAt (ms), connections (string set), sweptAt, sweptBy
 *
 * One partition for all instances: a handful of tasks, read by each every sweep interval. The
 * connection set is bounded by the item size (400 KB: about 9,000 connection ids per instance).
 */
import { DeleteCommand, GetCommand, PutCommand, UpdateCommand } from './commands.ts';
import type { TableAccess } from './store.ts';
import { conditionally, queryAll } from './table-ops.ts';

const PK = 'c2s-instances';

export interface InstanceRecord {
  address: string;
  expiresAt: number;
  connections: string[];
}

export class InstanceStore {
  constructor(private readonly db: TableAccess) {}

  private key(address: string) {
    return { pk: PK, sk: address };
  }

  async register(address: string, leaseMs: number): Promise<void> {
    await this.db.doc.send(new PutCommand({ TableName: this.db.table, Item: { ...this.key(address), address, expiresAt: Date.now() + leaseMs } }));
  }

  /** Extends the lease; false when the instance was swept meanwhile (its sessions were ended for it). */
  renew(address: string, leaseMs: number): Promise<boolean> {
    return conditionally(
      this.db.doc.send(
        new UpdateCommand({
          TableName: this.db.table,
          Key: this.key(address),
          UpdateExpression: 'SET expiresAt = :e',
          ConditionExpression: 'attribute_exists(pk) AND attribute_not_exists(sweptBy)',
          ExpressionAttributeValues: { ':e': Date.now() + leaseMs },
        }),
      ),
    );
  }

  async addConnection(address: string, connectionId: string): Promise<void> {
    await this.setConnection(address, connectionId, 'ADD');
  }

  async removeConnection(address: string, connectionId: string): Promise<void> {
    await this.setConnection(address, connectionId, 'DELETE');
  }

  private async setConnection(address: string, connectionId: string, op: 'ADD' | 'DELETE'): Promise<void> {
    await this.db.doc.send(
      new UpdateCommand({
        TableName: this.db.table,
        Key: this.key(address),
        UpdateExpression: `${op} connections :c`,
        ExpressionAttributeValues: { ':c': new Set([connectionId]) },
      }),
    );
  }

  async list(): Promise<InstanceRecord[]> {
    const items = await queryAll(this.db, { KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: { ':pk': PK }, ConsistentRead: true });
    return items.map((i) => ({ address: i.address as string, expiresAt: i.expiresAt as number, connections: [...((i.connections as Set<string> | undefined) ?? [])] }));
  }

  /**
   * Takes over an instance whose lease ran out: one sweeper wins (a claim older than `staleMs` may
   * be taken again: its sweeper died too). Returns the connections to end, or undefined.
   */
  async claimExpired(address: string, by: string, staleMs: number): Promise<string[] | undefined> {
    const now = Date.now();
    const won = await conditionally(
      this.db.doc.send(
        new UpdateCommand({
          TableName: this.db.table,
          Key: this.key(address),
          UpdateExpression: 'SET sweptBy = :by, sweptAt = :now',
          ConditionExpression: 'attribute_exists(pk) AND expiresAt < :now AND (attribute_not_exists(sweptAt) OR sweptAt < :stale)',
          ExpressionAttributeValues: { ':by': by, ':now': now, ':stale': now - staleMs },
        }),
      ),
    );
    if (!won) return undefined;
    const out = await this.db.doc.send(new GetCommand({ TableName: this.db.table, Key: this.key(address), ConsistentRead: true }));
    return [...((out.Item?.connections as Set<string> | undefined) ?? [])];
  }

  async remove(address: string): Promise<void> {
    await this.db.doc.send(new DeleteCommand({ TableName: this.db.table, Key: this.key(address) }));
  }
}
