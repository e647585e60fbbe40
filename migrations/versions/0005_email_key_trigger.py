"""The database fills user.email_key for writers that know only the template's columns, or refuses the row.

The template's own code (its initial_data, crud, admin scripts, a raw INSERT) writes `user` without email_key, which
is NOT NULL: every such write failed. A trigger now computes the key when the writer did not give one, exactly as
db.identity.email_identity would, and only where SQL can: email_identity(email) == lower(email) for an address that

- is made only of printable ASCII (U+0021..U+007E: no space, no control character, nothing non-ASCII, so none of
  the NFC/NFKC/casefold steps and no whitespace stripping change anything, and ASCII lower() is str.casefold()),
- has no double quote (a quoted local part is unquoted by email-validator's normalisation) and no angle or square
  bracket (a display name `Bob<a@x.com>` or a domain literal `[IPv6:…]` is normalised to something else when
  email-validator is configured to allow them; by default they are refused, and a refused address is folded whole,
  which is lower() again),
- has no `xn--` label in any case (email-validator turns a Punycode domain into its Unicode form),
- and contains an @ (so that the key is never '', the "not given" mark below).

A valid address of that kind normalises to its local part unchanged and its domain lowercased (UTS 46 maps ASCII
to lowercase only), an invalid one is folded whole: both are lower(email). tests/test_template_writes.py checks this
against email_identity on both engines with generated addresses. Lowercasing is ASCII-only on purpose: PostgreSQL's
lower() under COLLATE "C", SQLite's built-in lower() (not ICU's).

Any other address without a key is refused, loudly, with a message naming user.email_key, rather than stored with a
key that may be wrong (PostgreSQL's lower() makes `İ` an `i`): such users are written through the API (or with
email_key = email_identity(email)). A key the writer gives (our ORM's @validates hook, the service's fast
statements, the rename command) is kept as given; '' (or NULL) counts as not given.

On UPDATE, the key follows a changed email when the statement did not set email_key itself. "Set to the same value"
(a change from `Müller@x.com` to `müller@x.com`, one identity, which our service makes) cannot be told from "not
set" by comparing OLD and NEW, and neither engine tells a trigger which columns a statement sets; only `UPDATE OF
email_key` triggers fire exactly for the statements that name it. So one such trigger notes the row's id in the
table user_email_key_given before the row changes, and the trigger that fills the key reads and removes that note:
the table is empty outside a statement, on both engines.

PostgreSQL: BEFORE triggers, which may change NEW; they fire in the order of their names (documented), hence the
numbers: user_email_key_1_given (BEFORE UPDATE OF email_key) notes, user_email_key_2_fill (BEFORE INSERT OR UPDATE
OF email, email_key) fills, keeps or refuses, and always removes the note. A missing key is NULL, and NOT NULL is
checked after BEFORE triggers, so the constraint stays the last word (with the triggers disabled, a row without a
key is still refused).

SQLite: a trigger cannot change NEW, and NOT NULL is checked before AFTER triggers run, so the column gets DEFAULT
'' (a key no valid row has): the row is stored with '' and an AFTER INSERT trigger replaces it with lower(email) in
the same statement, or aborts the statement (nothing stored), before the next row or statement; the unique index
meanwhile sees '' for at most that row. An explicit NULL is still refused by NOT NULL itself. The note is taken by a
BEFORE UPDATE OF email_key trigger (BEFORE triggers run before AFTER ones: no reliance on SQLite's undocumented
order among triggers of one kind), and an AFTER UPDATE OF email, email_key trigger fills or refuses and removes it.
The UPDATE a trigger runs fires the other triggers (not itself); the note it leaves is removed by the trigger's
last statement. SQLite's batch operations rebuild a table and drop its triggers: a later revision that uses
batch_alter_table("user") must create them again (tests/test_template_writes.py checks they exist at head).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from advanced_alchemy.types import GUID
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# As in db/models.py when this revision was written.
EMAIL_KEY_LENGTH = 1536

REFUSAL = (
    "user.email_key is not given, and the database computes it only for a plain ASCII address (printable, with an "
    "@, without spaces, double quotes, angle or square brackets or an xn-- label): create or change this user "
    "through the API, or set email_key = db.identity.email_identity(email)"
)

POSTGRESQL = [
    """
    CREATE FUNCTION user_email_key_given() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO user_email_key_given (user_id) VALUES (OLD.id) ON CONFLICT DO NOTHING;
        RETURN NEW;
    END
    $$
    """,
    f"""
    CREATE FUNCTION user_email_key_fill() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' THEN
            DELETE FROM user_email_key_given WHERE user_id = OLD.id;
            IF FOUND THEN
                -- The statement set email_key itself.
                IF NEW.email_key <> '' THEN
                    RETURN NEW;
                END IF;
            ELSIF NEW.email IS NOT DISTINCT FROM OLD.email THEN
                RETURN NEW;
            END IF;
        ELSIF NEW.email_key <> '' THEN
            RETURN NEW;
        END IF;
        IF NEW.email COLLATE "C" ~ '^[!-~]+$'
           AND translate(NEW.email, '"<>[]', '') = NEW.email
           AND strpos(NEW.email, '@') > 0
           AND strpos(lower(NEW.email COLLATE "C"), 'xn--') = 0 THEN
            NEW.email_key := lower(NEW.email COLLATE "C");
            RETURN NEW;
        END IF;
        RAISE EXCEPTION USING
            ERRCODE = 'not_null_violation', TABLE = 'user', COLUMN = 'email_key', MESSAGE = '{REFUSAL}';
    END
    $$
    """,  # noqa: S608 (constants only)
    'CREATE TRIGGER user_email_key_1_given BEFORE UPDATE OF email_key ON "user" '
    "FOR EACH ROW EXECUTE FUNCTION user_email_key_given()",
    'CREATE TRIGGER user_email_key_2_fill BEFORE INSERT OR UPDATE OF email, email_key ON "user" '
    "FOR EACH ROW EXECUTE FUNCTION user_email_key_fill()",
]

# length(text) counts characters up to the first NUL, length(blob) bytes: equal only for ASCII without NUL.
_SQLITE_COMPUTABLE = """(
    typeof(NEW.email) = 'text'
    AND length(CAST(NEW.email AS BLOB)) = length(NEW.email)
    AND NEW.email NOT GLOB '*[^!-~]*'
    AND instr(NEW.email, '"') = 0 AND instr(NEW.email, '<') = 0 AND instr(NEW.email, '>') = 0
    AND instr(NEW.email, '[') = 0 AND instr(NEW.email, ']') = 0
    AND instr(NEW.email, '@') > 0
    AND instr(lower(NEW.email), 'xn--') = 0
)"""
_SQLITE_NOT_GIVEN = """(
    NEW.email_key = ''
    OR (NEW.email IS NOT OLD.email AND NOT EXISTS (SELECT 1 FROM user_email_key_given WHERE user_id = OLD.id))
)"""

SQLITE = [
    """
    CREATE TRIGGER user_email_key_given BEFORE UPDATE OF email_key ON "user"
    BEGIN
        INSERT OR IGNORE INTO user_email_key_given (user_id) VALUES (OLD.id);
    END
    """,
    f"""
    CREATE TRIGGER user_email_key_fill_insert AFTER INSERT ON "user" WHEN NEW.email_key = ''
    BEGIN
        SELECT RAISE(ABORT, '{REFUSAL}') WHERE NOT {_SQLITE_COMPUTABLE};
        UPDATE "user" SET email_key = lower(NEW.email) WHERE rowid = NEW.rowid;
        DELETE FROM user_email_key_given WHERE user_id = NEW.id;
    END
    """,  # noqa: S608 (constants only)
    f"""
    CREATE TRIGGER user_email_key_fill_update AFTER UPDATE OF email, email_key ON "user"
    BEGIN
        SELECT RAISE(ABORT, '{REFUSAL}') WHERE {_SQLITE_NOT_GIVEN} AND NOT {_SQLITE_COMPUTABLE};
        UPDATE "user" SET email_key = lower(NEW.email) WHERE rowid = NEW.rowid AND {_SQLITE_NOT_GIVEN};
        DELETE FROM user_email_key_given WHERE user_id = OLD.id;
    END
    """,  # noqa: S608 (constants only)
]

TRIGGERS = {
    "postgresql": ["user_email_key_1_given", "user_email_key_2_fill"],
    "sqlite": ["user_email_key_given", "user_email_key_fill_insert", "user_email_key_fill_update"],
}


def upgrade() -> None:
    op.create_table(
        "user_email_key_given",
        sa.Column("user_id", GUID(length=16), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_email_key_given")),
    )
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        # Before the triggers: a batch operation rebuilds the table, and its triggers would go with it.
        with op.batch_alter_table("user") as batch_op:
            batch_op.alter_column(
                "email_key",
                existing_type=sa.String(length=EMAIL_KEY_LENGTH),
                existing_nullable=False,
                server_default="",
            )
    for statement in POSTGRESQL if dialect == "postgresql" else SQLITE:
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for trigger in TRIGGERS[dialect]:
        op.execute(f'DROP TRIGGER {trigger} ON "user"' if dialect == "postgresql" else f"DROP TRIGGER {trigger}")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION user_email_key_fill()")
        op.execute("DROP FUNCTION user_email_key_given()")
    else:
        with op.batch_alter_table("user") as batch_op:
            batch_op.alter_column(
                "email_key",
                existing_type=sa.String(length=EMAIL_KEY_LENGTH),
                existing_nullable=False,
                server_default=None,
            )
    op.drop_table("user_email_key_given")
