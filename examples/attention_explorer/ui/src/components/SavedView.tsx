// Saved sessions (IndexedDB): list, open, rename, delete.
import { useState } from "react";
import type { SavedMeta } from "../storage/savedSessions";

interface Props {
  saved: SavedMeta[];
  error: string | null;
  onOpen: (id: string) => void;
  onRename: (id: string, name: string) => Promise<void>;
  onDelete: (id: string) => Promise<void>;
}

export function SavedView({ saved, error, onOpen, onRename, onDelete }: Props) {
  const [editing, setEditing] = useState<string | null>(null);
  const [text, setText] = useState("");
  if (error) return <div className="empty error">{error}</div>;
  if (!saved.length) {
    return (
      <div className="empty" data-testid="saved">
        <h2>No saved sessions</h2>
        <p>“Save” in the top bar keeps the current trace and its fingerprint summary in this browser.</p>
      </div>
    );
  }
  return (
    <div className="saved" data-testid="saved">
      <table className="saved-table">
        <thead>
          <tr><th>name</th><th>saved</th><th>model</th><th>runs</th><th>steps</th><th>dominant zone</th><th>size</th><th /></tr>
        </thead>
        <tbody>
          {saved.map((s) => (
            <tr key={s.id} data-saved-id={s.id}>
              <td>
                {editing === s.id ? (
                  <form
                    onSubmit={(e) => {
                      e.preventDefault();
                      void onRename(s.id, text).then(() => setEditing(null));
                    }}
                  >
                    <input aria-label="new name" value={text} onChange={(e) => setText(e.target.value)} autoFocus />
                    <button className="btn" type="submit" disabled={!text.trim()}>
                      OK
                    </button>
                  </form>
                ) : (
                  <span className="saved-name">{s.name}</span>
                )}
              </td>
              <td className="small">{new Date(s.savedAt).toLocaleString()}</td>
              <td className="small">{s.model}</td>
              <td>{s.digest.runCount}</td>
              <td>{s.digest.nSteps}</td>
              <td>{s.digest.dominantZone ?? "—"}</td>
              <td className="small">{(s.bytes / 1024).toFixed(1)} KB</td>
              <td className="actions">
                <button className="btn" onClick={() => onOpen(s.id)}>
                  Open
                </button>
                <button
                  className="btn"
                  onClick={() => {
                    setEditing(s.id);
                    setText(s.name);
                  }}
                >
                  Rename
                </button>
                <button className="btn" onClick={() => window.confirm(`Delete “${s.name}”?`) && void onDelete(s.id)}>
                  Delete
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
