/**
 * SASL channel binding data of the TLS connection a frame came on (RFC 5056), for the SCRAM-*-PLUS
 * mechanisms. Only native (TCP) clients have it: a WebSocket client's TLS ends at API Gateway.
 */
export const CHANNEL_BINDING_TYPES = ['tls-exporter', 'tls-server-end-point'] as const;
export type ChannelBindingType = (typeof CHANNEL_BINDING_TYPES)[number];
export type ChannelBindings = Partial<Record<ChannelBindingType, Buffer>>;
