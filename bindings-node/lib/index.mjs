// ES module entry: the same objects as the CommonJS entry.
import ferrovia from './index.js';

export const { runWorkers, Workers, currentWorker, Server, SessionRequest, RequestStream, WebTransportSession, WebSocketSession, DatagramDuplexStream, WebTransportBidirectionalStream, WebTransportSendStream, WebTransportReceiveStream, WebTransportError, MessageStream, toDuplex, generateCertificate } = ferrovia;
export default ferrovia;
