/**
 * PEP (XEP-0163) nodes and items, in the account's partition so account deletion removes them:
 *   user#<bare> / pep#node#<node>          configuration, affiliations, explicit subscriptions, item
 *                                          order, last item
 *   user#<bare> / pep#item#<node>#<id>     one published item
 * Node names and item ids are URI-encoded in keys, so '#' inside them cannot blur the prefixes.
 * The node item keeps the ordered item ids (eviction needs no read of the items), the explicit
 * subscribers (a publish reads no more than the node item) and, when small, the last item itself
 * (last-item delivery at login needs one Query per contact). Writes to a node item are conditional
 * on its version; callers retry on a lost race.
 */
import { DeleteCommand, GetCommand, PutCommand } from './commands.ts';
import { deleteKeys, queryAll } from './table-ops.ts';
import type { TableAccess } from './store.ts';
import { userPk } from './keys.ts';

export type AccessModel = 'open' | 'presence' | 'roster' | 'whitelist';
export type SendLastPublished = 'never' | 'on_sub' | 'on_sub_and_presence';
export type Affiliation = 'owner' | 'publisher' | 'member' | 'none' | 'outcast';

export interface NodeConfig {
  accessModel: AccessModel;
  /** Roster groups allowed under the 'roster' access model. */
  rosterGroups: string[];
  persistItems: boolean;
  maxItems: number;
  sendLastPublishedItem: SendLastPublished;
  deliverNotifications: boolean;
  deliverPayloads: boolean;
  notifyRetract: boolean;
  notifyDelete: boolean;
  title?: string;
}

export interface LastItem {
  id: string;
  published: string;
  /** The item's payload, kept inline when small (see INLINE_LAST_BYTES). */
  xml?: string;
}

export interface PepNode {
  owner: string;
  node: string;
  config: NodeConfig;
  /** Affiliations other than the owner's (whitelist members, outcasts), by bare JID. */
  affiliations: Record<string, Affiliation>;
  /** Explicit subscriptions (XEP-0060 §6.1): subscribed JID (bare or full) → when. */
  subscribers: Record<string, string>;
  /** Ids of the stored items, oldest first. */
  itemIds: string[];
  last?: LastItem;
  version: number;
}

export interface PepItem {
  id: string;
  /** The payload element, serialized. */
  xml: string;
  published: string;
}

/** Last items up to this size are copied into the node item. */
export const INLINE_LAST_BYTES = 8 * 1024;

const NODE = 'pep#node#';
const ITEM = 'pep#item#';
const nodeKey = (node: string) => NODE + encodeURIComponent(node);
const itemPrefix = (node: string) => `${ITEM}${encodeURIComponent(node)}#`;
const itemKey = (node: string, id: string) => itemPrefix(node) + encodeURIComponent(id);

function toNode(item: Record<string, any>): PepNode {
  return {
    owner: item.owner,
    node: item.node,
    config: item.config,
    affiliations: item.affiliations ?? {},
    subscribers: item.subscribers ?? {},
    itemIds: item.itemIds ?? [],
    last: item.last,
    version: item.version ?? 0,
  };
}

export class PepStore {
  constructor(private readonly db: TableAccess) {}

  async getNode(owner: string, node: string): Promise<PepNode | undefined> {
    const out = await this.db.doc.send(
      new GetCommand({ TableName: this.db.table, Key: { pk: userPk(owner), sk: nodeKey(node) }, ConsistentRead: true }),
    );
    return out.Item ? toNode(out.Item) : undefined;
  }

  /** Every node of an account whose name starts with `prefix` (one Query; items are not read). */
  async listNodes(owner: string, prefix = ''): Promise<PepNode[]> {
    const items = await queryAll(this.db, {
      KeyConditionExpression: 'pk = :pk AND begins_with(sk, :p)',
      ExpressionAttributeValues: { ':pk': userPk(owner), ':p': NODE + encodeURIComponent(prefix) },
    });
    return items.map(toNode);
  }

  /**
   * Writes the node item if its stored version is still `expected` (0 = must not exist yet), and
   * bumps the version. Resolves false on a lost race.
   */
  async putNode(node: PepNode, expected: number): Promise<boolean> {
    try {
      await this.db.doc.send(
        new PutCommand({
          TableName: this.db.table,
          Item: {
            pk: userPk(node.owner),
            sk: nodeKey(node.node),
            owner: node.owner,
            node: node.node,
            config: node.config,
            affiliations: node.affiliations,
            subscribers: node.subscribers,
            itemIds: node.itemIds,
            last: node.last,
            version: expected + 1,
          },
          ConditionExpression: expected === 0 ? 'attribute_not_exists(pk)' : 'version = :v',
          ExpressionAttributeValues: expected === 0 ? undefined : { ':v': expected },
        }),
      );
      node.version = expected + 1;
      return true;
    } catch (err) {
      if ((err as Error).name === 'ConditionalCheckFailedException') return false;
      throw err;
    }
  }

  async putItem(owner: string, node: string, item: PepItem): Promise<void> {
    await this.db.doc.send(
      new PutCommand({ TableName: this.db.table, Item: { pk: userPk(owner), sk: itemKey(node, item.id), ...item } }),
    );
  }

  async getItem(owner: string, node: string, id: string): Promise<PepItem | undefined> {
    const out = await this.db.doc.send(
      new GetCommand({ TableName: this.db.table, Key: { pk: userPk(owner), sk: itemKey(node, id) }, ConsistentRead: true }),
    );
    return out.Item ? { id: out.Item.id, xml: out.Item.xml, published: out.Item.published } : undefined;
  }

  /** Every stored item of a node (in key order; callers order them by the node's itemIds). */
  async listItems(owner: string, node: string): Promise<PepItem[]> {
    const items = await queryAll(this.db, {
      KeyConditionExpression: 'pk = :pk AND begins_with(sk, :p)',
      ExpressionAttributeValues: { ':pk': userPk(owner), ':p': itemPrefix(node) },
      ConsistentRead: true,
    });
    return items.map((i) => ({ id: i.id, xml: i.xml, published: i.published }));
  }

  async deleteItems(owner: string, node: string, ids: string[]): Promise<void> {
    await deleteKeys(this.db, ids.map((id) => ({ pk: userPk(owner), sk: itemKey(node, id) })));
  }

  /** Removes the node item and every item of the node. */
  async deleteNode(owner: string, node: string): Promise<void> {
    const keys = (
      await queryAll(this.db, {
        KeyConditionExpression: 'pk = :pk AND begins_with(sk, :p)',
        ExpressionAttributeValues: { ':pk': userPk(owner), ':p': itemPrefix(node) },
        ProjectionExpression: 'pk, sk',
      })
    ).map((i) => ({ pk: i.pk as string, sk: i.sk as string }));
    await deleteKeys(this.db, keys);
    await this.db.doc.send(new DeleteCommand({ TableName: this.db.table, Key: { pk: userPk(owner), sk: nodeKey(node) } }));
  }

}
